"""The ``pocketnet`` command: compose the config with Hydra and run it. No logic beyond that."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pocketnet.config.checks import ConfigError, check_overrides
from pocketnet.config.schema import register_configs

__all__ = ["CONF_DIR", "main"]


def _conf_dir() -> Path:
    """``conf/`` beside the package (source checkout / editable install) or inside it (wheel)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"pocketnet's conf/ folder is not beside {here}")


CONF_DIR = _conf_dir()
VALUE_FLAGS = {
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _job(cfg: DictConfig) -> float | None:
    from pocketnet.run import SetupError, run  # heavy imports only once Hydra has composed

    try:
        row = run(cfg)
    except SetupError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    return row.get("best acc")


def main() -> None:
    """Entry point of the ``pocketnet`` console script."""
    register_configs()
    args = sys.argv[1:]
    flags = {
        "-h",
        "--help",
        "--hydra-help",
        "--info",
        "-i",
        "--cfg",
        "-c",
        "--resolve",
        "--shell-completion",
        "-sc",
        "--version",
    }
    if not flags.intersection(args):
        overrides, skip = [], False
        for arg in args:
            if not skip and not arg.startswith("-"):
                overrides.append(arg)
            skip = arg in VALUE_FLAGS
        try:
            check_overrides(CONF_DIR, overrides)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
    _job()
