"""Where the configs are (``conf/``) and composing them with Hydra, without torch (``--help``
and shell completion load only this much)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

__all__ = ["CONF_DIR", "compose", "hydra_choice"]


def _conf_dir() -> Path:
    """``conf/`` beside the package (source checkout / editable install) or inside it (wheel)."""
    here = Path(__file__).resolve().parents[1]
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"pocketnet's conf/ folder is not beside {here}")


CONF_DIR = _conf_dir()


def compose(
    overrides: list[str], config_name: str = "config", with_hydra: bool = False
) -> DictConfig:
    """``conf/<config_name>.yaml`` composed with ``overrides`` by Hydra (typed, checked): inside
    a running Hydra job with its config loader, elsewhere with a temporary one; ``with_hydra``
    keeps Hydra's own node (``hydra.*``)."""
    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name, overrides, return_hydra_config=with_hydra)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name, overrides, return_hydra_config=with_hydra)


def hydra_choice(group: str) -> str | None:
    """The option the running Hydra job chose for ``group`` (None outside a Hydra job, or when
    the group is unset)."""
    if not HydraConfig.initialized():
        return None
    choice = HydraConfig.get().runtime.choices.get(group)
    return None if choice in (None, "null") else str(choice)
