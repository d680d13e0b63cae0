"""Pictures of a DARTS search: architecture-weight heat maps and derived-cell diagrams.

Everything is drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas (never
``pyplot``), so it works headless, leaves matplotlib's global state alone and frees each figure
once its PNG is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle
from matplotlib.transforms import Bbox

from pocketnet.models.pocketnet.genotype import Genotype
from pocketnet.models.pocketnet.ops import PRIMITIVES

__all__ = ["alpha_heatmap", "cell_diagram"]

CELL_KINDS = ("normal", "reduce")
DPI = 120


def _state_name(source: int) -> str:
    """Plain-text name of a cell state: 0 -> c_k-2, 1 -> c_k-1, 2.. -> node0.."""
    return ("c_k-2", "c_k-1")[source] if source < 2 else f"node{source - 2}"


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG (creating parent folders) and free it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if not isinstance(fig.canvas, FigureCanvasAgg):
            FigureCanvasAgg(fig)
        fig.savefig(path, dpi=DPI, format="png", facecolor="white")
    finally:
        fig.clear()
    return path


def _as_array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=float)


def alpha_heatmap(
    weights: dict[str, list[np.ndarray]],
    primitives: Sequence[str],
    path: str | Path,
    title: str = "",
) -> Path:
    """Heat map of softmaxed architecture weights, one panel per cell kind, written as a PNG.

    ``weights[kind][i]`` has shape ``(i + 2, len(primitives))``: the operation weights of each
    edge into intermediate node ``i``. Rows are edges (``node1 <- c_k-1``), columns operations;
    every cell shows its value and the strongest non-``none`` operation of each edge is outlined.
    Returns ``path``.
    """
    primitives = list(primitives)
    n_ops = len(primitives)
    if not weights:
        raise ValueError("alpha_heatmap: weights is empty; expected e.g. {'normal': [...]}")
    kinds = [k for k in CELL_KINDS if k in weights] + [k for k in weights if k not in CELL_KINDS]
    panels: dict[str, np.ndarray] = {}
    row_labels: dict[str, list[str]] = {}
    for kind in kinds:
        nodes = weights[kind]
        if len(nodes) == 0:
            raise ValueError(f"alpha_heatmap: weights[{kind!r}] has no nodes")
        rows, labels = [], []
        for i, node in enumerate(nodes):
            array = _as_array(node)
            expected = (i + 2, n_ops)
            if array.shape != expected:
                raise ValueError(
                    f"alpha_heatmap: weights[{kind!r}][{i}] has shape {array.shape}, expected "
                    f"{expected} (node_index + 2 incoming edges, len(primitives) operations)"
                )
            rows.append(array)
            labels += [f"node{i} <- {_state_name(src)}" for src in range(i + 2)]
        panels[kind] = np.concatenate(rows)
        row_labels[kind] = labels

    keep = [j for j, op in enumerate(primitives) if op != "none"]
    n_rows = max(len(m) for m in panels.values())
    fig = Figure(figsize=(0.7 * n_ops * len(kinds) + 3.0 * len(kinds) + 1.0, 0.42 * n_rows + 2.2))
    fig.set_layout_engine("constrained")
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    # colours span the weights' own range: early in a search they sit near 1/n_ops
    lo = min(float(m.min()) for m in panels.values())
    hi = max(float(m.max()) for m in panels.values())
    hi = max(hi, lo + 1e-3)
    image = None
    for ax, kind in zip(axes, kinds, strict=True):
        matrix = panels[kind]
        image = ax.imshow(matrix, cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
        ax.set_title(f"{kind} cell")
        ax.set_xticks(range(n_ops), primitives, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(len(matrix)), row_labels[kind], fontsize=9)
        ax.tick_params(length=0)
        for start in np.cumsum([i + 2 for i in range(len(weights[kind]))])[:-1]:
            ax.axhline(start - 0.5, color="white", linewidth=2.5)
        for r, row in enumerate(matrix):
            best = keep[int(np.argmax(row[keep]))] if keep else -1
            for c, value in enumerate(row):
                ax.text(
                    c,
                    r,
                    f"{value:.3f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if value > lo + 0.6 * (hi - lo) else "white",
                    fontweight="bold" if c == best else "normal",
                )
            if best >= 0:
                outline = Rectangle((best - 0.5, r - 0.5), 1, 1, fill=False, lw=2, ec="red")
                ax.add_patch(outline)
    label = f"softmax weight (uniform: 1/{n_ops} = {1 / n_ops:.3f})"
    fig.colorbar(image, ax=list(axes), label=label, shrink=0.9)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


_BOX = (1.35, 0.6)  # width, height of a state box in data units


def _op_colour(op: str) -> Any:
    index = PRIMITIVES.index(op) if op in PRIMITIVES else len(PRIMITIVES)
    return colormaps["tab10"](index % 10)


def _draw_box(ax: Any, xy: tuple[float, float], text: str, colour: str) -> Any:
    w, h = _BOX
    box = FancyBboxPatch(
        (xy[0] - w / 2, xy[1] - h / 2),
        w,
        h,
        boxstyle="round,pad=0.05",
        fc=colour,
        ec="black",
        lw=1.2,
        zorder=3,
    )
    ax.add_patch(box)
    ax.text(*xy, text, ha="center", va="center", fontsize=10, zorder=4)
    return box


def _arrow(
    ax: Any,
    start: tuple[float, float],
    end: tuple[float, float],
    rad: float,
    colour: Any,
    boxes: tuple[Any, Any],
    width: float = 1.6,
) -> None:
    """An arc3 arrow between two box centres, clipped at the boxes' outlines."""
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            patchA=boxes[0],
            patchB=boxes[1],
            connectionstyle=f"arc3,rad={rad}",
            arrowstyle="-|>,head_length=0.5,head_width=0.25",
            mutation_scale=14,
            color=colour,
            lw=width,
            shrinkA=1,
            shrinkB=1,
            zorder=2,
        )
    )


def _label(ax: Any, edge: tuple, text: str, colour: Any, taken: list[Bbox], renderer: Any) -> None:
    """Label an arc3 edge near its middle, sliding along it to dodge earlier labels and boxes."""
    (x0, y0), (x1, y1), rad = edge
    cx = (x0 + x1) / 2 + rad * (y1 - y0)  # the arc3 Bezier control point (equal aspect)
    cy = (y0 + y1) / 2 - rad * (x1 - x0)
    bbox = {"boxstyle": "round,pad=0.2", "fc": "white", "ec": colour, "alpha": 0.95}
    label = ax.text(0, 0, text, ha="center", va="center", fontsize=7.5, zorder=5, bbox=bbox)
    extent = None
    for t in (0.5, 0.42, 0.58, 0.34, 0.66, 0.27, 0.73, 0.5):
        u = 1 - t
        label.set_position(
            (u * u * x0 + 2 * u * t * cx + t * t * x1, u * u * y0 + 2 * u * t * cy + t * t * y1)
        )
        extent = label.get_window_extent(renderer).padded(5)  # + its frame
        if not any(extent.overlaps(other) for other in taken):
            break
    taken.append(extent)


def _bow(order: list[int], src: int, dst: int) -> float:
    """Arc3 ``rad`` of an edge: straight between ellipse neighbours, else bowed a little
    inwards (edges run clockwise, so positive is inwards), clear of the boxes passed by."""
    return 0.0 if abs(order.index(dst) - order.index(src)) == 1 else 0.12


def cell_diagram(genotype: Genotype, kind: str, path: str | Path, title: str = "") -> Path:
    """Diagram of the derived ``kind`` ("normal" or "reduce") cell of ``genotype`` as a PNG.

    All states sit on one ellipse, read clockwise: inputs ``c_{k-2}``/``c_{k-1}`` on the left,
    the intermediate nodes 0..n-1 across the top and the concatenated output ``c_{k}`` at the
    right. With the states in convex position (and edges that skip a state bowed slightly
    inwards) no edge runs through a box. Each edge is coloured and labelled near its middle by
    its operation; grey arrows feed the concatenated states to ``c_{k}``. Returns ``path``.
    """
    if kind not in CELL_KINDS:
        raise ValueError(f"cell_diagram: unknown cell kind {kind!r}; valid: {list(CELL_KINDS)}")
    gene = getattr(genotype, kind)
    concat = getattr(genotype, f"{kind}_concat")
    n = len(gene)
    a = 1.25 * n + 2.5  # ellipse half-axes, wide enough for the node boxes
    b = 0.62 * a
    order = [1, 0, *range(2, n + 3)]  # states clockwise around the ellipse
    angles = {0: 165.0, 1: 205.0, n + 2: -15.0}
    for i in range(n):
        angles[i + 2] = 135.0 - (i + 0.5) * 105.0 / n if n > 1 else 90.0
    pos = {s: (a * np.cos(np.radians(t)), b * np.sin(np.radians(t))) for s, t in angles.items()}

    xlim = (-a - 1.0, a + 1.0)
    ylim = (-b * np.sin(np.radians(25.0)) - 0.6, b + 0.6)
    scale = 0.6  # inches per data unit
    top = 0.45 if title else 0.05  # inches kept free for the title
    size = (scale * (xlim[1] - xlim[0]), scale * (ylim[1] - ylim[0]) + top)
    fig = Figure(figsize=size)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - top / size[1]))
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set(xlim=xlim, ylim=ylim)
    ax.apply_aspect()
    renderer = canvas.get_renderer()
    boxes = {0: _draw_box(ax, pos[0], "c_{k-2}", "#f4c7a1")}
    boxes[1] = _draw_box(ax, pos[1], "c_{k-1}", "#f4c7a1")
    for i in range(n):
        boxes[i + 2] = _draw_box(ax, pos[i + 2], str(i), "#bcd4ee")
    boxes[n + 2] = _draw_box(ax, pos[n + 2], "c_{k}", "#b9e3b0")
    taken = [box.get_window_extent(renderer) for box in boxes.values()]

    for state in concat:
        rad = _bow(order, state, n + 2)
        _arrow(ax, pos[state], pos[n + 2], rad, "0.6", (boxes[state], boxes[n + 2]), width=1.2)
    for i, node in enumerate(gene):
        seen: dict[int, int] = {}
        for op, src in node:
            repeat = seen.get(src, 0)
            seen[src] = repeat + 1
            rad = _bow(order, src, i + 2) + 0.25 * ((repeat + 1) // 2) * (-1) ** repeat
            colour = _op_colour(op)
            _arrow(ax, pos[src], pos[i + 2], rad, colour, (boxes[src], boxes[i + 2]))
            _label(ax, (pos[src], pos[i + 2], rad), op, colour, taken, renderer)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
