"""``--help``: the config groups a command's primary config uses, with their options (Hydra's own
listing would show the internal ``schema/*`` groups too), and the composed config.

Hydra's ``--help`` lists every config group whether the template shows them or not, copying the
whole config store once per group (seconds); :func:`help_text` composes the config once.
"""

from __future__ import annotations

import string

import yaml
from omegaconf import OmegaConf, open_dict

from pocketnet.config.compose import CONF_DIR, compose

__all__ = ["group_listing", "help_text"]

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


def help_text(config_name: str, overrides: list[str]) -> str:
    """The command's ``hydra.help.template`` with ``$CONFIG``, the config ``overrides`` give."""
    cfg = compose(overrides, config_name, with_hydra=True)
    template = cfg.hydra.help.template
    with open_dict(cfg):
        del cfg["hydra"]
    return string.Template(template).safe_substitute(CONFIG=OmegaConf.to_yaml(cfg))
