"""The ``pocketnet-eval`` and ``pocketnet-export`` jobs.

``pocketnet-eval`` embeds every image of each verification set and its flip exactly as a run's
validation does (same transform, flip-fused embeddings, same protocol), so ``metrics.json``
equals the figures the run logged for that checkpoint; it adds a ROC curve per set and the
practical metrics. ``pocketnet-export`` writes backbone-only weights and an ONNX graph with a
dynamic batch axis, checked with ONNX Runtime.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from pocketnet.config.schema import Color
from pocketnet.console import print_results
from pocketnet.data.datasets import VerificationSet
from pocketnet.data.encoded import EncodedImageDataset, FileImages
from pocketnet.data.sources import SOURCES, bin_verification_set, pairs_verification_set
from pocketnet.data.templates import read_template_set
from pocketnet.data.transforms import FaceBatchTransform
from pocketnet.evaluation.checkpoints import LoadedModel, load_ensemble, load_model
from pocketnet.evaluation.export import export_onnx, file_size_mb, onnx_parity, save_backbone
from pocketnet.evaluation.formats import OnnxBackbone, side_by_side_latency
from pocketnet.evaluation.int8 import calibration_images, quantize_int8
from pocketnet.evaluation.practical import practical_metrics, write_practical
from pocketnet.evaluation.templates import (
    evaluate_templates,
    template_features,
    template_pair_scores,
    template_roc,
)
from pocketnet.evaluation.verification import (
    embed_fused,
    evaluate_verification,
    roc_curve,
    verification_scores,
)
from pocketnet.models.inference import fast_inference_copy
from pocketnet.runtime import SetupError, build_loggers, finish_wandb

log = logging.getLogger(__name__)

__all__ = ["embed_set", "evaluate_checkpoint", "export_checkpoint", "plot_roc"]


def _load(cfg: DictConfig, ensemble: list[str] | None = None) -> LoadedModel:
    """``cfg.ckpt_path``'s model, or one ensemble of it and the ``ensemble`` checkpoints."""
    try:
        if ensemble:
            return load_ensemble([cfg.ckpt_path, *ensemble], cfg.backbone, cfg.input_size)
        return load_model(cfg.ckpt_path, cfg.backbone, cfg.input_size)
    except (ValueError, OSError) as err:
        raise SetupError(str(err)) from err


def _sets(cfg: DictConfig, loaded: LoadedModel) -> list[VerificationSet]:
    """``eval.sets``, or the run's own verification sets when none are given."""
    if not cfg.eval.sets:
        if loaded.run_config is None:
            raise ValueError(
                f"{loaded.source} carries no run config: name the sets, e.g. "
                "eval.sets=[/data/lfw.bin,{pairs:/data/pairs.txt,images:/data/lfw}]"
            )
        return SOURCES[loaded.run_config.data.name](loaded.run_config.data)[2]
    sets = []
    for entry in cfg.eval.sets:
        if isinstance(entry, str) and entry.endswith(".bin"):
            sets.append(bin_verification_set(entry))
        elif isinstance(entry, DictConfig) and {"pairs", "images"} <= set(entry):
            sets.append(pairs_verification_set(entry.pairs, entry.images, entry.get("name")))
        else:
            raise ValueError(
                f"eval.sets entry {entry!r}: give a .bin file or "
                "{pairs: <pairs file>, images: <image folder>, name: <optional name>}"
            )
    return sets


def embed_set(
    backbone: torch.nn.Module,
    dataset: Dataset,
    transform: FaceBatchTransform,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """Flip-fused embeddings of every image of ``dataset`` in its order (N, D), float32."""
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=lambda batch: batch)
    out = []
    with torch.inference_mode():
        for images, *_ in loader:
            out.append(embed_fused(backbone, transform(images.to(device))).float().cpu())
    return torch.cat(out)


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """TAR against FAR (log axis) for each named curve, as a PNG."""
    fig = Figure(figsize=(6, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, (far, tar) in curves.items():
        keep = far > 0
        ax.step(far[keep], tar[keep], where="post", label=name)
    ax.set(xscale="log", xlabel="FAR", ylabel="TAR", title=title, ylim=(0, 1.01))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    return path


def _log(cfg: DictConfig, out: Path, metrics: dict[str, Any]) -> None:
    for logger in build_loggers(cfg.logger, out):
        numbers = {
            f"eval/{name}/{k}": v
            for name, figures in metrics["sets"].items()
            for k, v in figures.items()
        }
        numbers.update(
            {
                f"eval/templates/{name}/{k}": v
                for name, figures in metrics.get("templates", {}).items()
                for k, v in figures.items()
            }
        )
        numbers.update(
            {
                f"practical/{k}": v
                for k, v in metrics.get("practical", {}).items()
                if isinstance(v, int | float)
            }
        )
        logger.log_metrics(numbers, step=0)
        if isinstance(logger, WandbLogger) and "practical" in metrics:
            practical = metrics["practical"]
            logger.log_table(
                "practical", columns=list(practical), data=[[str(v) for v in practical.values()]]
            )
        logger.finalize("success")
    finish_wandb()


def _templates(
    cfg: DictConfig,
    loaded: LoadedModel,
    model: torch.nn.Module,
    transform: FaceBatchTransform,
    device: torch.device,
    out: Path,
) -> Iterator[tuple[str, dict[str, float]]]:
    """IJB-style template verification of each ``eval.templates`` set (with a ROC PNG)."""
    for entry in cfg.eval.templates:
        try:
            ts = read_template_set(entry.meta, entry.pairs, entry.images)
        except (ValueError, OSError) as err:
            raise SetupError(str(err)) from err
        name = entry.get("name") or Path(entry.meta).stem.removesuffix("_face_tid_mid")
        dataset = EncodedImageDataset(FileImages(ts.paths))
        embeddings = embed_set(model, dataset, transform, cfg.eval.batch_size, device)
        ids, features = template_features(embeddings, ts.templates, ts.medias)
        scores = template_pair_scores(ids, features, ts.pairs)
        figures = evaluate_templates(scores, ts.labels)
        figures.update(templates=len(ids), pairs=len(scores))
        far, tar, _ = template_roc(scores, ts.labels)
        title = f"{loaded.name} on {name} templates (AUC {figures['auc']:.4f})"
        plot_roc({name: (far, tar)}, out / f"roc_{name}.png", title)
        yield name, figures


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """Verification on each set (metrics.json, roc_<set>.png, optional embeddings) and the
    practical metrics (practical.json) of ``cfg.ckpt_path`` (with ``eval.ensemble``: of the
    ensemble)."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = _load(cfg, list(cfg.eval.ensemble))
    onnx_graph = not isinstance(loaded.backbone, torch.nn.Module)  # run on the CPU
    if onnx_graph and cfg.eval.practical:
        raise SetupError(
            f"{loaded.source} is an ONNX graph: the practical metrics measure the PyTorch "
            "model (pocketnet-export times every format); set eval.practical=false"
        )
    try:
        sets = _sets(cfg, loaded)
    except (ValueError, OSError) as err:
        raise SetupError(str(err)) from err
    run_color = loaded.run_config.data.color if loaded.run_config is not None else "rgb"
    color = Color(cfg.eval.color or run_color).value
    transform = FaceBatchTransform(color, loaded.input_size)
    if onnx_graph:
        device, model = torch.device("cpu"), loaded.backbone
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        fast = cfg.eval.fast_inference
        model = (fast_inference_copy(loaded.backbone) if fast else loaded.backbone).to(device)
    results: dict[str, dict[str, float]] = {}
    for vset in sets:
        embeddings = embed_set(model, vset.dataset, transform, cfg.eval.batch_size, device)
        results[vset.name] = evaluate_verification(embeddings, vset.issame).as_dict()
        far, tar, _ = roc_curve(verification_scores(embeddings), vset.issame.bool())
        title = f"{loaded.name} on {vset.name} (acc {results[vset.name]['acc']:.4f})"
        plot_roc({vset.name: (far, tar)}, out / f"roc_{vset.name}.png", title)
        if cfg.eval.save_embeddings:
            np.save(out / f"embeddings_{vset.name}.npy", embeddings.numpy())
    metrics: dict[str, Any] = {
        "checkpoint": loaded.source,
        "model": loaded.name,
        "input_size": loaded.input_size,
        "color": color,
        "sets": results,
    }
    if cfg.eval.templates:
        metrics["templates"] = {
            name: figures
            for name, figures in _templates(cfg, loaded, model, transform, device, out)
        }
    if cfg.eval.practical:
        metrics["practical"] = practical_metrics(
            loaded.backbone.cpu(),
            loaded.input_size,
            out / "artefacts",
            onnx=cfg.eval.onnx,
            fast=cfg.eval.fast_inference,
        )
        write_practical(metrics["practical"], out / "practical.json")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    rows = [{"model": name, **figures} for name, figures in results.items()]
    rows += [{"model": f"{n} (templates)", **f} for n, f in metrics.get("templates", {}).items()]
    print_results(f"{loaded.name} ({loaded.source}): verification", rows)
    if "practical" in metrics:
        print_results("practical metrics", [{"model": loaded.name, **metrics["practical"]}])
    _log(cfg, out, metrics)
    return metrics


def _export_formats(
    cfg: DictConfig,
    loaded: LoadedModel,
    out: Path,
    report: dict[str, Any],
    calibration: np.ndarray | None,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Write the ONNX formats ``export`` asks for; each format's backbone and its figures so
    far (file, size, parity on normalised embeddings)."""
    e, size, threads = cfg.export, loaded.input_size, torch.get_num_threads()
    models: dict[str, Any] = {"pytorch fp32": loaded.backbone.eval()}
    figures: dict[str, dict[str, Any]] = {"pytorch fp32": {"file": "backbone.pth"}}

    def add(name: str, path: Path, tolerance: float | None) -> None:
        figures[name] = {"file": path.name, "size MB": file_size_mb(path)}
        if tolerance is not None:
            parity = onnx_parity(loaded.backbone, path, size, list(e.check_batches))
            figures[name]["max abs diff"] = {
                str(b): d if math.isfinite(d) else None for b, d in parity.items()
            }
            figures[name]["parity ok"] = all(d <= tolerance for d in parity.values())  # NaN: no
        models[name] = OnnxBackbone(path, threads)

    onnx_path = export_onnx(loaded.backbone, size, out / "backbone.onnx", e.opset)
    add("onnx fp32", onnx_path, e.tolerance)
    report["size onnx MB"] = figures["onnx fp32"]["size MB"]
    report["max abs diff"] = figures["onnx fp32"]["max abs diff"]
    if e.fp16_onnx:
        half = export_onnx(loaded.backbone, size, out / "backbone_fp16.onnx", e.opset, torch.half)
        add("onnx fp16", half, e.fp16_tolerance)
    if calibration is not None:
        add("onnx int8", quantize_int8(onnx_path, out / "backbone_int8.onnx", calibration), None)
        figures["onnx int8"]["calibration images"] = len(calibration)
    return models, figures


def _judge_formats(
    cfg: DictConfig,
    loaded: LoadedModel,
    sets: list[VerificationSet],
    models: dict[str, Any],
    figures: dict[str, dict[str, Any]],
) -> None:
    """Each format's verification accuracy on the run's sets, the mean cosine of its
    embeddings to PyTorch fp32's there, and its batch-1 CPU latency (the formats in turns),
    into ``figures``."""
    if sets:
        data = loaded.run_config.data
        transform = FaceBatchTransform(Color(data.color).value, loaded.input_size)
        for vset in sets:
            reference = None
            for name, model in models.items():
                embeddings = embed_set(model, vset.dataset, transform, 64, torch.device("cpu"))
                acc = evaluate_verification(embeddings, vset.issame).accuracy
                figures[name].setdefault("acc", {})[vset.name] = acc
                reference = embeddings if reference is None else reference  # pytorch fp32's
                cosine = torch.nn.functional.cosine_similarity(embeddings, reference).mean()
                figures[name].setdefault("cosine to fp32", {})[vset.name] = float(cosine)
    if cfg.export.latency:
        for name, ms in side_by_side_latency(models, loaded.input_size).items():
            figures[name]["latency ms"] = ms


def export_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """``backbone.pth`` (fp32), ``backbone_fp16.pth`` and the ONNX graphs (fp32, fp16, int8 as
    ``export`` asks) of ``cfg.ckpt_path``, each ONNX graph checked with ONNX Runtime, with every
    format's accuracy on the run's sets and CPU latency in ``export.json``; an ONNX graph off
    by more than its tolerance is kept but reported as an error (exit code 1)."""
    out = Path(cfg.paths.output_dir)
    loaded = _load(cfg)
    e = cfg.export
    if not isinstance(loaded.backbone, torch.nn.Module):
        raise SetupError(f"{loaded.source} is an ONNX graph already: export a PyTorch checkpoint")
    if e.int8 and not e.onnx:
        raise SetupError("export.int8=true quantises the fp32 ONNX graph: keep export.onnx=true")
    if e.int8 and loaded.run_config is None:
        raise SetupError(
            f"export.int8=true calibrates on the run's training faces, and {loaded.source} "
            "carries no run config: export a run's checkpoint (checkpoints/*.ckpt)"
        )
    # the run's data before any file is written (a missing data folder loses nothing)
    sets, calibration = [], None
    if e.onnx and (e.int8 or e.accuracy) and loaded.run_config is not None:
        data = loaded.run_config.data
        try:
            train_set, _, run_sets = SOURCES[data.name](data)
            sets = run_sets if e.accuracy else []
            if e.int8:
                color = Color(data.color).value
                calibration = calibration_images(
                    train_set, color, loaded.input_size, e.calibration_images
                )
        except (ValueError, OSError) as err:
            raise SetupError(f"the run's data (data.name={data.name}): {err}") from err
    report: dict[str, Any] = {
        "checkpoint": loaded.source,
        "model": loaded.name,
        "input_size": loaded.input_size,
        "backbone config": OmegaConf.to_container(loaded.run_config.backbone, resolve=True)
        if loaded.run_config is not None
        else None,
    }
    fp32 = save_backbone(loaded.backbone, out / "backbone.pth")
    report["size fp32 MB"] = file_size_mb(fp32)
    if e.fp16:
        report["size fp16 MB"] = file_size_mb(
            save_backbone(loaded.backbone, out / "backbone_fp16.pth", half=True)
        )
    if e.onnx:
        models, figures = _export_formats(cfg, loaded, out, report, calibration)
        figures["pytorch fp32"]["size MB"] = report["size fp32 MB"]
        _judge_formats(cfg, loaded, sets, models, figures)
        report["formats"] = figures
        report["parity ok"] = all(f.get("parity ok", True) for f in figures.values())
    (out / "export.json").write_text(json.dumps(report, indent=1))
    print_results(f"export of {loaded.source} -> {out}", _format_rows(report))
    if report.get("parity ok") is False:
        failed = [n for n, f in report["formats"].items() if f.get("parity ok") is False]
        log.error("ONNX differs from PyTorch beyond its tolerance: %s", ", ".join(failed))
        raise SystemExit(
            f"error: ONNX Runtime differs from PyTorch beyond the tolerance in {failed} "
            f"(normalised embeddings; export.tolerance={e.tolerance}, "
            f"export.fp16_tolerance={e.fp16_tolerance}; files kept in {out})"
        )
    return report


def _format_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per format: file, size, parity, latency (and its ratio to fp32 ONNX), accuracy."""
    if "formats" not in report:
        return [{k: v for k, v in report.items() if not isinstance(v, dict | bool)}]
    rows = []
    base = report["formats"]["onnx fp32"].get("latency ms")
    for name, f in report["formats"].items():
        row: dict[str, Any] = {"model": name, "file": f["file"], "size MB": f.get("size MB")}
        if "max abs diff" in f:
            diffs = [d if d is not None else math.nan for d in f["max abs diff"].values()]
            worst = math.nan if any(map(math.isnan, diffs)) else max(diffs)
            row["max abs diff"] = f"{worst:.1e} ({'ok' if f['parity ok'] else 'FAILED'})"
        if "latency ms" in f:
            row["CPU ms (batch 1)"] = f["latency ms"]
            row["vs onnx fp32"] = f"{f['latency ms'] / base:.2f}x" if base else None
        for vset, acc in f.get("acc", {}).items():
            row[f"{vset} acc"] = acc
            row[f"{vset} cosine to fp32"] = f["cosine to fp32"][vset]
        rows.append(row)
    return rows
