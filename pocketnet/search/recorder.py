"""What a search leaves behind: the genotype of every epoch and the best one, with pictures.

In the run folder:

* ``genotype.yaml`` / ``genotype.txt``: the genotype of the epoch with the best ``val/top1``
  (YAML and DARTS string), ready for ``backbone=pocketnet backbone.genotype=<file>``;
  ``genotype_normal.png`` / ``genotype_reduce.png``: its cells;
* ``search/history.json``: per validated epoch, top-1, verification accuracy, genotype and how
  undecided each cell's alphas still are (``alpha_entropy_normal`` / ``_reduce``, 1 = uniform:
  see :func:`~pocketnet.search.supernet.alpha_entropy`; a genotype derived near 1 is close to a
  draw, and the search wants more epochs);
* ``search/epoch_XXX/``: ``alphas.png`` (softmaxed alphas per edge), ``alphas.npz``,
  ``normal.png`` and ``reduce.png`` (the derived cells).

With wandb on, the heat-map and the cells are logged as images and the genotype as text.
The record (best epoch and history) is part of the checkpoint, so a resumed search keeps it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.loggers import WandbLogger

from pocketnet.models.pocketnet.genotype import Genotype, parse_genotype
from pocketnet.models.pocketnet.ops import PRIMITIVES
from pocketnet.search.plots import alpha_heatmap, cell_diagram
from pocketnet.search.supernet import CELL_KINDS, alpha_entropy

log = logging.getLogger(__name__)

__all__ = ["SearchRecorder"]


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class SearchRecorder(L.Callback):
    """Per validated epoch: derive, draw and log the genotype; keep the best one."""

    def __init__(self, output_dir: str | Path, monitor: str = "val/top1"):
        self.root = Path(output_dir)
        self.monitor = monitor
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None

    @property
    def best_genotype(self) -> Genotype | None:
        return None if self.best is None else parse_genotype(self.best["genotype"])

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        genotype = module.supernet.genotype(name=f"search_epoch_{epoch:03d}")
        weights = module.supernet.edge_weights()
        folder = self.root / "search" / f"epoch_{epoch:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(
            folder / "alphas.npz",
            **{f"{k}_{i}": w for k in weights for i, w in enumerate(weights[k])},
        )
        undecided = {k: alpha_entropy(weights[k]) for k in CELL_KINDS}
        entropy = {f"alpha_entropy_{k}": v for k, v in undecided.items()}
        title = f"epoch {epoch}: {self.monitor} {metrics.get(self.monitor, float('nan')):.4f}"
        heat = f"{title}; alpha entropy " + ", ".join(f"{k} {v:.4f}" for k, v in undecided.items())
        images = {"alphas": alpha_heatmap(weights, PRIMITIVES, folder / "alphas.png", heat)}
        for kind in CELL_KINDS:
            images[kind] = cell_diagram(genotype, kind, folder / f"{kind}.png", f"{kind}, {title}")
        entry = {
            "epoch": epoch,
            "step": trainer.global_step,
            **metrics,
            **entropy,
            "genotype": genotype.to_darts_string(),
        }
        self.history = [h for h in self.history if h["epoch"] != epoch] + [entry]
        _write_text(self.root / "search" / "history.json", json.dumps(self.history, indent=1))
        score = metrics.get(self.monitor)
        if score is not None and (self.best is None or score > self.best[self.monitor]):
            self.best = entry
            self._write_best()
        log.info(
            "epoch %d genotype (%s %.4f): %s",
            epoch,
            self.monitor,
            score or float("nan"),
            entry["genotype"],
        )
        for logger in trainer.loggers:
            logger.log_metrics({f"search/{k}": v for k, v in entropy.items()}, trainer.global_step)
            if isinstance(logger, WandbLogger):
                logger.log_image(
                    "search/cells",
                    [str(p) for p in images.values()],
                    step=trainer.global_step,
                    caption=list(images),
                )
                logger.log_text(
                    "search/genotype",
                    columns=["epoch", "genotype"],
                    data=[[epoch, entry["genotype"]]],
                    step=trainer.global_step,
                )

    def _write_best(self) -> None:
        named = replace(self.best_genotype, name=f"search_epoch_{self.best['epoch']:03d}")
        _write_text(self.root / "genotype.yaml", named.to_yaml())
        _write_text(self.root / "genotype.txt", named.to_darts_string() + "\n")
        for kind in CELL_KINDS:
            cell_diagram(
                named,
                kind,
                self.root / f"genotype_{kind}.png",
                f"best ({self.monitor} {self.best[self.monitor]:.4f}, "
                f"epoch {self.best['epoch']}): {kind} cell",
            )

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.best is not None and trainer.is_global_zero:  # resumed: the files match the state
            self._write_best()

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])
        self.best = state["best"]
