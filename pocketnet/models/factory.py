"""Build backbones and heads from their config groups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
from omegaconf import DictConfig, OmegaConf
from torch import nn

from pocketnet.models.backbone import build_backbone
from pocketnet.models.heads import MarginHead
from pocketnet.models.partial_fc import PartialFCHead
from pocketnet.models.timm_models import FACE_MODELS
from pocketnet.untrusted import load_torch_file, strip_wrappers

__all__ = ["backbone_from_config", "head_from_config", "plain_dict"]


def _tuples(value: Any) -> Any:
    """timm expects tuples where YAML gives lists (``channels: [32, 64, 128, 256]``)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def plain_dict(cfg: Any) -> dict[str, Any]:
    """A config node (or mapping) as a plain, resolved dict (enums as their names)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return dict(cfg)


def backbone_from_config(cfg: Any, input_size: int) -> nn.Module:
    """A backbone from ``backbone`` (kind ``timm`` or ``face``) at the data's input resolution."""
    cfg = plain_dict(cfg)
    if cfg["kind"] == "timm":
        return build_backbone(
            cfg["name"],
            cfg["embedding_size"],
            input_size,
            cfg["stem_stride"],
            cfg["dropout"],
            cfg["embedding_head"],
            **_tuples(cfg["timm_kwargs"]),
        )
    if cfg["kind"] == "face":
        if cfg["name"] not in FACE_MODELS:
            raise ValueError(
                f"backbone.name={cfg['name']!r} is not a pocketnet face net; valid: "
                f"{FACE_MODELS} (any other timm model: backbone=timm backbone.name=...)"
            )
        pocketnet_args = {k: cfg[k] for k in ("genotype", "C", "n_cells") if k in cfg}
        model = timm.create_model(
            cfg["name"],
            embedding_size=cfg["embedding_size"],
            input_size=input_size,
            **pocketnet_args,
            **cfg["model_kwargs"],
        )
        if cfg["checkpoint"] is not None:
            _load_backbone(model, cfg["checkpoint"], cfg["name"], input_size)
        return model
    raise ValueError(f"backbone.kind={cfg['kind']!r} is not known; valid: ['face', 'timm']")


def _load_backbone(model: nn.Module, path: str, name: str, input_size: int) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(f"backbone.checkpoint: {path} does not exist")
    state = strip_wrappers(load_torch_file(path, "backbone.checkpoint"), path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:400]
        raise ValueError(
            f"backbone.checkpoint: {path} does not fit {name} at input_size {input_size} "
            f"(size-dependent keys {list(model.size_dependent_keys)} follow the input size): "
            f"{detail}"
        ) from None


def head_from_config(cfg: Any, embedding_size: int, num_classes: int) -> MarginHead:
    """A margin head from ``head`` over ``num_classes`` training identities; Partial FC
    (sampled centres) where ``head.sample_rate`` < 1."""
    cfg = plain_dict(cfg)
    margin = {k: cfg[k] for k in ("s", "m1", "m2", "m3", "normalize")}
    margin["label_smoothing"] = cfg.get("label_smoothing", 0.0)  # older checkpoints have none
    rate = cfg.get("sample_rate", 1.0)  # checkpoints from before Partial FC have none
    if rate < 1.0:
        return PartialFCHead(embedding_size, num_classes, sample_rate=rate, **margin)
    return MarginHead(embedding_size, num_classes, **margin)
