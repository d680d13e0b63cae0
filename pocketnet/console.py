"""What a run prints: the composed config as a tree and the results table; the libraries'
adverts and deprecation notices about their own internals silenced."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import rich
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

__all__ = ["console", "print_config_tree", "print_results", "configure_console"]

PIPED_WIDTH = 200  # rich's 80 columns would cut a results table's headers in a log file


def _piped() -> bool:
    """Output to a file or pipe, with no ``COLUMNS`` asking for a width."""
    return not sys.stdout.isatty() and "COLUMNS" not in os.environ


def console() -> Console:
    """rich's console: the terminal's width, or 200 columns when the output is a file or pipe
    (``COLUMNS`` still wins)."""
    return Console(width=PIPED_WIDTH) if _piped() else Console()


# Lines from Lightning's rank-zero logger that tell a user nothing about their run.
NOISE = (
    "💡 Tip:",
    "Loading `train_dataloader` to estimate",
    "Trainer already configured with model summary callbacks",
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(NOISE)


def configure_console() -> None:
    """Silence Lightning's cloud-logger advert and step-estimate notice, and the deprecation
    warning Lightning's own tree utilities raise under recent torch (nothing a user can act on);
    give rich's shared console (Lightning's model summary) the piped width."""
    if _piped():
        rich.reconfigure(width=PIPED_WIDTH)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


FIRST = (
    "stage",
    "data",
    "backbone",
    "head",
    "kd",
    "resolution",
    "trainer",
    "logger",
    "callbacks",
    "paths",
)


def print_config_tree(cfg: DictConfig, out: Console | None = None) -> None:
    """The resolved config, one branch per group (groups first, then the top-level keys)."""
    tree = Tree("config", style="bold")
    rest = {k: v for k, v in cfg.items() if k not in FIRST}
    for key in FIRST:
        if key in cfg:
            branch = tree.add(f"[bold cyan]{key}")
            branch.add(OmegaConf.to_yaml(cfg[key], resolve=True).rstrip() or "null")
    tree.add("[bold cyan]run").add(OmegaConf.to_yaml(OmegaConf.create(rest), resolve=True).rstrip())
    (out or console()).print(tree)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_results(
    title: str, rows: Sequence[Mapping[str, Any]], out: Console | None = None
) -> None:
    """One column per model (its ``model`` key), one row per figure, in first-seen order."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys and k != "model"]
    table = Table(title=title)
    table.add_column("")
    for i, row in enumerate(rows):
        table.add_column(str(row.get("model", i)), justify="right")
    for key in keys:
        table.add_row(key, *(_fmt(row[key]) if key in row else "-" for row in rows))
    (out or console()).print(table)
