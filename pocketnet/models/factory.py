"""Build backbones and heads from their config groups."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from pocketnet.models.backbone import FaceBackbone, build_backbone
from pocketnet.models.heads import MarginHead

__all__ = ["backbone_from_config", "head_from_config"]


def _tuples(value: Any) -> Any:
    """timm expects tuples where YAML gives lists (``channels: [32, 64, 128, 256]``)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _plain(cfg: Any) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def backbone_from_config(cfg: Any, input_size: int) -> FaceBackbone:
    """A backbone from ``backbone`` (kind ``timm``) at the data's input resolution."""
    cfg = _plain(cfg)
    if cfg["kind"] != "timm":
        raise ValueError(f"backbone.kind={cfg['kind']!r} is not known; valid: ['timm']")
    return build_backbone(
        cfg["name"],
        cfg["embedding_size"],
        input_size,
        cfg["stem_stride"],
        cfg["dropout"],
        **_tuples(cfg["timm_kwargs"]),
    )


def head_from_config(cfg: Any, embedding_size: int, num_classes: int) -> MarginHead:
    """A margin head from ``head`` over ``num_classes`` training identities."""
    cfg = _plain(cfg)
    return MarginHead(
        embedding_size,
        num_classes,
        s=cfg["s"],
        m1=cfg["m1"],
        m2=cfg["m2"],
        m3=cfg["m3"],
        normalize=cfg["normalize"],
    )
