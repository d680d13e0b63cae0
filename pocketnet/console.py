"""What a run prints: the composed config as a tree and the results table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

__all__ = ["print_config_tree", "print_results"]

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


def print_config_tree(cfg: DictConfig, console: Console | None = None) -> None:
    """The resolved config, one branch per group (groups first, then the top-level keys)."""
    tree = Tree("config", style="bold")
    rest = {k: v for k, v in cfg.items() if k not in FIRST}
    for key in FIRST:
        if key in cfg:
            branch = tree.add(f"[bold cyan]{key}")
            branch.add(OmegaConf.to_yaml(cfg[key], resolve=True).rstrip() or "null")
    tree.add("[bold cyan]run").add(OmegaConf.to_yaml(OmegaConf.create(rest), resolve=True).rstrip())
    (console or Console()).print(tree)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_results(
    title: str, rows: Sequence[Mapping[str, Any]], console: Console | None = None
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
    (console or Console()).print(table)
