"""A backbone from any checkpoint pocketnet meets, for evaluation and export.

* a Lightning ``.ckpt`` of a run: the run's ``config.yaml`` (beside ``checkpoints/``) names the
  backbone, and its stage the input size (:meth:`Stage.input_size`);
  the ``backbone.*`` weights are loaded strictly;
* a teacher-bank file (``teacher_bank/*.pt``): it carries its own model config;
* a backbone state_dict (insightface ``backbone.pth``, an official PocketNet file, a
  ``pocketnet-export`` output): ``backbone=<name>`` says what it holds, ``input_size`` its size;
* an ONNX graph (``pocketnet-export``'s fp32, fp16 or int8 one), run by ONNX Runtime: the graph
  gives its input size, and one in ``<run>/export/<time>/`` its run's config.

Several PyTorch ones make one model, an :class:`EmbeddingEnsemble` (:func:`load_ensemble`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from pocketnet.models.ensemble import EmbeddingEnsemble, check_members
from pocketnet.models.factory import backbone_from_config, plain_dict
from pocketnet.stages.stage import STAGES
from pocketnet.untrusted import load_torch_file, strip_wrappers

__all__ = ["LoadedModel", "load_ensemble", "load_model"]


@dataclass
class LoadedModel:
    """A backbone ready to embed, where it came from, and the run config when there is one."""

    backbone: nn.Module | Callable[[torch.Tensor], torch.Tensor]  # an ONNX graph's: a callable
    input_size: int
    name: str
    source: str
    run_config: DictConfig | None = None


def _build(
    backbone_cfg: Any, input_size: int, state: dict[str, torch.Tensor], path: Path
) -> nn.Module:
    """The backbone ``backbone_cfg`` at ``input_size`` with ``state`` loaded strictly, eval mode."""
    cfg = {**plain_dict(backbone_cfg), "checkpoint": None}  # the weights come from ``state``
    model = backbone_from_config(cfg, input_size)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:400]
        raise ValueError(
            f"{path}: its weights do not fit backbone {cfg['name']} at input size {input_size}: "
            f"{detail}"
        ) from None
    return model.eval()


def _from_lightning(payload: dict[str, Any], path: Path) -> LoadedModel:
    run_cfg_path = path.parent.parent / "config.yaml"
    if not run_cfg_path.is_file():
        raise ValueError(
            f"{path} is a Lightning checkpoint but {run_cfg_path} (its run's config) is missing: "
            "export the backbone with the run folder intact, or pass a backbone file"
        )
    run_cfg = OmegaConf.load(run_cfg_path)
    stage = STAGES.get(run_cfg.stage.name)
    if not stage.has_backbone:
        raise ValueError(
            f"{path} is a {stage.name} checkpoint (a supernet): train its genotype first, "
            f"backbone=pocketnet backbone.genotype={path.parent.parent / 'genotype.yaml'}"
        )
    size = stage.input_size(run_cfg)
    state = {
        k.removeprefix("backbone."): v
        for k, v in payload["state_dict"].items()
        if k.startswith("backbone.")
    }
    model = _build(run_cfg.backbone, size, state, path)
    return LoadedModel(model, int(size), str(run_cfg.backbone.name), str(path), run_cfg)


def _from_onnx(path: Path, input_size: int | None) -> LoadedModel:
    from pocketnet.evaluation.export import INPUT_NAME, OUTPUT_NAME
    from pocketnet.evaluation.formats import OnnxBackbone

    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path}: no such ONNX file")
    try:
        model = OnnxBackbone(path, torch.get_num_threads())
    except Exception as err:  # ONNX Runtime's own error types (a damaged or foreign file)
        raise ValueError(f"ckpt_path={path}: ONNX Runtime cannot load it ({err})") from err
    (graph_input, *more), outputs = model.session.get_inputs(), model.session.get_outputs()
    shape = graph_input.shape  # [N, 3, H, W]
    if (
        more
        or graph_input.name != INPUT_NAME
        or OUTPUT_NAME not in [o.name for o in outputs]
        or graph_input.type not in ("tensor(float)", "tensor(float16)")
        or len(shape) != 4
        or shape[1] != 3
        or not isinstance(shape[2], int)
        or shape[2] != shape[3]
    ):
        raise ValueError(
            f"{path}: a pocketnet-export graph expected (input '{INPUT_NAME}' (N, 3, H, H) "
            f"float32 or float16, output '{OUTPUT_NAME}'), got input {graph_input.name!r} "
            f"{graph_input.type} {shape} and outputs {[o.name for o in outputs]}"
        )
    size = int(shape[2])
    if input_size is not None and input_size != size:
        raise ValueError(f"input_size={input_size} but {path} takes {size} px images")
    # an export of a run's checkpoint lies in <run>/export/<time>/: the run's sets and colours
    folder = path.resolve().parent.parent
    run_config = None
    if folder.name == "export" and (folder.parent / "config.yaml").is_file():
        run_config = OmegaConf.load(folder.parent / "config.yaml")
        stage = STAGES.get(run_config.stage.name)
        if stage.input_size(run_config) != size:
            run_config = None  # not this run's model
    return LoadedModel(model, size, path.stem, str(path), run_config)


def load_model(
    ckpt_path: str | Path,
    backbone: Any = None,
    input_size: int | None = None,
    key: str = "ckpt_path",
) -> LoadedModel:
    """The backbone in ``ckpt_path`` (eval mode, CPU). ``backbone`` (a ``backbone`` group
    config) and ``input_size`` are needed for a bare state_dict only; ``key`` is the config key
    that named the file, for the errors."""
    path = Path(ckpt_path)
    if path.suffix == ".onnx":
        return _from_onnx(path, input_size)
    payload = load_torch_file(path, key)
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: not a checkpoint (a {type(payload).__name__}, not a dict)")
    if "pytorch-lightning_version" in payload and "state_dict" in payload:
        loaded = _from_lightning(payload, path)
    elif "model_config" in payload and "backbone" in payload:  # a teacher-bank file
        mc = payload["model_config"]
        model = _build(mc["backbone"], mc["input_size"], payload["backbone"], path)
        loaded = LoadedModel(model, int(mc["input_size"]), mc["backbone"]["name"], str(path))
    else:
        if backbone is None:
            raise ValueError(
                f"{path} is a bare backbone state_dict: name its net with backbone=<option> "
                "(iresnet50, mobilefacenet, pocketnet_s_128, ...) and input_size=<pixels>"
            )
        size = input_size or 112
        state = strip_wrappers(payload, path)
        loaded = LoadedModel(_build(backbone, size, state, path), size, backbone.name, str(path))
    if input_size is not None and input_size != loaded.input_size:
        raise ValueError(
            f"input_size={input_size} but {path} holds a model for {loaded.input_size} px"
        )
    return loaded


def load_ensemble(
    paths: list[str | Path], backbone: Any = None, input_size: int | None = None
) -> LoadedModel:
    """``paths[0]`` (``ckpt_path``) and the ``eval.ensemble`` checkpoints after it, each read by
    :func:`load_model` (a bare state_dict with the one ``backbone`` and ``input_size``), as one
    :class:`EmbeddingEnsemble` with the first run config among them (its sets and colours).
    The members must be PyTorch models of one input size and, where their runs say, one colour
    order."""
    keys = ["ckpt_path"] + ["eval.ensemble"] * (len(paths) - 1)
    for key, path in zip(keys, paths, strict=True):
        if Path(path).suffix == ".onnx":
            raise ValueError(
                f"{key}={path}: an ONNX graph cannot join an ensemble; give its run's checkpoint"
            )
    members = [
        load_model(path, backbone, input_size, key) for key, path in zip(keys, paths, strict=True)
    ]
    runs = [m.run_config for m in members if m.run_config is not None]
    described = [
        (m.source, m.input_size, None if m.run_config is None else str(m.run_config.data.color))
        for m in members
    ]
    check_members(described, "ensemble members")
    ensemble = EmbeddingEnsemble([m.backbone for m in members]).eval()
    name = "ensemble of " + " + ".join(m.name for m in members)
    source = " + ".join(m.source for m in members)
    return LoadedModel(ensemble, members[0].input_size, name, source, runs[0] if runs else None)
