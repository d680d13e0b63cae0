"""What ``--help`` lists: the config groups a command's primary config uses, with their options
(Hydra's own listing would show the internal ``schema/*`` groups too)."""

from __future__ import annotations

import yaml

from pocketnet.runtime import CONF_DIR

__all__ = ["group_listing"]

# groups picked inside another group's config, set with group@package=option
NESTED = {"config": ["optimizer@stage.optimizer", "scheduler@stage.scheduler"]}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def group_listing(config_name: str) -> str:
    """``group: option, option, ...`` per group of ``conf/<config_name>.yaml`` (not hydra)."""
    defaults = yaml.safe_load((CONF_DIR / f"{config_name}.yaml").read_text())["defaults"]
    groups = [next(iter(d)) for d in defaults if isinstance(d, dict)]
    groups = [g for g in groups if g != "hydra"] + NESTED.get(config_name, [])
    width = max(map(len, groups))
    return "\n".join(f"{g:<{width}}  {', '.join(_options(g.split('@')[0]))}" for g in groups)
