"""Parts a config names by class: ``{_target_: <module.Class>, <its arguments>}`` entries of
``callbacks.extra`` and ``logger.extra``, built with Hydra's ``instantiate``."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

__all__ = ["instantiate_extra"]


def instantiate_extra(extra: DictConfig | None, key: str, kind: type) -> list[Any]:
    """Build each non-null entry of ``extra`` (the config key ``key``, e.g. ``callbacks.extra``);
    each must give an instance of ``kind``. A mistake raises ValueError naming the entry."""
    out = []
    for name, node in (extra or {}).items():
        if node is None:
            continue
        where = f"{key}.{name}"
        if "_target_" not in node:
            raise ValueError(
                f"{where} needs _target_: the class to build (e.g. a Lightning {kind.__name__})"
            )
        try:
            part = instantiate(node)
        except InstantiationException as err:
            raise ValueError(f"{where}: {str(err).splitlines()[0]}") from None
        if not isinstance(part, kind):
            raise ValueError(
                f"{where}: {node._target_} gives a {type(part).__name__}, not a Lightning "
                f"{kind.__name__}"
            )
        out.append(part)
    return out
