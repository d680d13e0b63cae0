"""Register the face backbones with timm: insightface ``iresnet18/50/100`` and ``mobilefacenet``,
the PocketNet presets ``pocketnet_{s,m}_{128,256}``, EdgeFace's ``edgeface_xs_gamma_06`` and
``edgeface_s_gamma_05``, ``ghostfacenet_v1`` (GhostFaceNetV1-1.3-1) and MixFaceNets'
``mixfacenet_xs`` and ``mixfacenet_s``. ``import pocketnet`` does this.

``timm.create_model("iresnet50", embedding_size=512, checkpoint_path="backbone.pth")`` builds the
model and loads an insightface ``backbone.pth`` (a plain state_dict; timm also unwraps
``state_dict``/``model`` entries and ``module.`` prefixes) with ``strict=True``; an official
PocketNet checkpoint loads the same way into ``pocketnet_s_128`` etc.

Arguments (timm 1.0): ``create_model`` drops every kwarg that is None, consumes
``checkpoint_path``, ``scriptable``, ``exportable`` and ``no_jit`` itself, and always passes
``pretrained``, ``pretrained_cfg``, ``pretrained_cfg_overlay`` and ``cache_dir`` to the
entrypoint. Here:

- ``pretrained=True`` raises: timm hosts no weights for these names (use ``checkpoint_path``);
- ``pretrained_cfg`` (also a tag, ``"iresnet50.tag"``) raises: there are no pretrained configs;
- ``pretrained_cfg_overlay`` updates ``model.pretrained_cfg``, the face data config timm's
  ``resolve_data_config`` reads (``input_size`` (3, s, s), mean = std = 0.5, i.e.
  ``(x / 255 - 0.5) / 0.5``);
- ``cache_dir`` is ignored (only used to download weights);
- ``num_classes`` may only be 0 (timm's "no classifier"): these are embedding networks; a margin
  head does the classes;
- model kwargs: ``embedding_size``, ``input_size``; iresnet also ``dropout``; PocketNet also
  ``genotype``, ``C``, ``n_cells`` (the name only sets defaults: ``pocketnet_s_128`` with
  ``embedding_size=256`` is exactly ``pocketnet_s_256``); MixFaceNet also ``shuffle``
  (ShuffleMixFaceNet); anything else raises TypeError.

Name clashes: timm 1.0.31 has no model by these names. Should timm (or another module) register
one of them first, importing this module raises RuntimeError instead of overwriting it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import timm
from timm.models import model_entrypoint, register_model
from timm.models._features import FeatureHookNet
from torch import nn

from pocketnet.models.edgeface import EDGEFACE_VARIANTS, EdgeFace
from pocketnet.models.ghostfacenet import GhostFaceNet
from pocketnet.models.iresnet import IRESNET_LAYERS, IResNet
from pocketnet.models.mixfacenet import MIXFACENET_VARIANTS, MixFaceNet
from pocketnet.models.mobilefacenet import MobileFaceNet
from pocketnet.models.pocketnet.network import PRESETS, build_pocketnet

__all__ = ["FACE_MODELS", "check_name_free"]

FACE_MODELS: list[str] = []  # the names registered here, in registration order


def check_name_free(name: str) -> None:
    """Raise if timm already has ``name`` from a module other than this one."""
    if timm.is_model(name):
        owner = model_entrypoint(name).__module__
        if owner != __name__:
            raise RuntimeError(
                f"timm already registers '{name}' (from {owner}); pocketnet's face model "
                f"'{name}' would overwrite it. Rename one of them."
            )


def _register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    check_name_free(fn.__name__)
    FACE_MODELS.append(fn.__name__)
    return register_model(fn)


def _face_data_cfg(name: str, input_size: int) -> dict[str, Any]:
    return {
        "architecture": name,
        "input_size": (3, input_size, input_size),
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "num_classes": 0,
    }


def _create(
    name: str, build: Callable[..., nn.Module], pretrained: bool, kwargs: dict[str, Any]
) -> nn.Module:
    if pretrained:
        raise ValueError(
            f"{name}: timm hosts no weights for it; load a checkpoint (e.g. an insightface "
            f"backbone.pth) with timm.create_model('{name}', checkpoint_path=...)"
        )
    if kwargs.pop("pretrained_cfg", None) is not None:
        raise ValueError(
            f"{name} has no pretrained configs or tags; use pretrained_cfg_overlay to change "
            "its data config"
        )
    overlay = kwargs.pop("pretrained_cfg_overlay", None) or {}
    kwargs.pop("cache_dir", None)
    num_classes = kwargs.pop("num_classes", 0)
    if num_classes:
        raise ValueError(
            f"{name} outputs an embedding and has no classifier: num_classes must be 0, got "
            f"{num_classes} (set embedding_size, and use a margin head for classes)"
        )
    features_only = kwargs.pop("features_only", False)
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    model = build(**kwargs)
    model.pretrained_cfg = {**_face_data_cfg(name, model.input_size), **overlay}
    if features_only:  # the stage maps, by timm's hooks on the model's feature_info
        model = FeatureHookNet(model, out_indices, no_rewrite=True)
        model.pretrained_cfg = model.body.pretrained_cfg
    return model


def _entrypoint(name: str, build: Callable[..., nn.Module], doc: str) -> Callable[..., nn.Module]:
    """A timm entrypoint named ``name`` that builds with ``build``, registered with timm."""

    def create(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return _create(name, build, pretrained, kwargs)

    create.__name__ = create.__qualname__ = name
    create.__doc__ = doc
    return _register(create)


_ENTRYPOINTS: list[tuple[str, Callable[..., nn.Module], str]] = [
    *(
        (name, partial(IResNet, layers), f"insightface {name} (stages {layers}).")
        for name, layers in IRESNET_LAYERS.items()
    ),
    ("mobilefacenet", MobileFaceNet, "arcface_torch's MobileFaceNet (``mbf``)."),
    *(
        (name, partial(build_pocketnet, name), f"PocketNet preset {name} ({preset}).")
        for name, preset in PRESETS.items()
    ),
    *(
        (name, partial(EdgeFace, name), f"EdgeFace {name} ({trunk}, low-rank ratio {gamma}).")
        for name, (trunk, gamma) in EDGEFACE_VARIANTS.items()
    ),
    ("ghostfacenet_v1", GhostFaceNet, "GhostFaceNetV1-1.3-1 (width 1.3, stem stride 1)."),
    *(
        (name, partial(MixFaceNet, name), f"MixFaceNet {name} (width {width}, GDC {gdc}).")
        for name, (width, gdc) in MIXFACENET_VARIANTS.items()
    ),
]
for _name, _build, _doc in _ENTRYPOINTS:  # reached through timm.create_model(name)
    _entrypoint(_name, _build, _doc)
