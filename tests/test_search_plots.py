"""Search-stage pictures: alpha heat maps and derived-cell diagrams are real, non-blank PNGs."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from pocketnet.models.pocketnet.genotype import load_genotype
from pocketnet.models.pocketnet.ops import PRIMITIVES
from pocketnet.search.plots import alpha_heatmap, cell_diagram

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _softmaxed(rng: np.random.Generator, n_nodes: int = 4) -> list[np.ndarray]:
    nodes = []
    for i in range(n_nodes):
        logits = rng.normal(size=(i + 2, len(PRIMITIVES)))
        nodes.append(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
    return nodes


def _check_png(path, min_width: int, min_height: int) -> None:
    assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC
    image = imread(path)
    height, width = image.shape[:2]
    assert width >= min_width and height >= min_height
    colours = np.unique(image[..., :3].reshape(-1, 3), axis=0)
    assert len(colours) > 20, "the picture is (nearly) blank"


def test_alpha_heatmap_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    weights = {"normal": _softmaxed(rng), "reduce": _softmaxed(rng)}
    out = alpha_heatmap(weights, PRIMITIVES, tmp_path / "a" / "b" / "alphas.png", title="ep 3")
    assert out == tmp_path / "a" / "b" / "alphas.png"
    _check_png(out, min_width=800, min_height=400)
    # Two panels side by side: wider than tall.
    height, width = imread(out).shape[:2]
    assert width > height


def test_alpha_heatmap_single_kind(tmp_path):
    out = alpha_heatmap(
        {"normal": _softmaxed(np.random.default_rng(1), 2)}, PRIMITIVES, tmp_path / "n.png"
    )
    _check_png(out, min_width=300, min_height=200)


def test_alpha_heatmap_rejects_wrong_shape(tmp_path):
    weights = {"normal": _softmaxed(np.random.default_rng(2))}
    weights["normal"][2] = np.full((3, len(PRIMITIVES) - 1), 0.1)
    with pytest.raises(ValueError, match=r"\[2\] has shape \(3, 7\), expected \(4, 8\)"):
        alpha_heatmap(weights, PRIMITIVES, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize("name", ["face", "cifar10"])
@pytest.mark.parametrize("kind", ["normal", "reduce"])
def test_cell_diagram_builtin_genotypes(tmp_path, name, kind):
    path = tmp_path / "cells" / f"{name}_{kind}.png"
    out = cell_diagram(load_genotype(name), kind, path, title=f"{name} {kind}")
    assert out == path
    _check_png(out, min_width=600, min_height=300)


def test_cell_diagram_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match=r"'upsample'.*'normal', 'reduce'"):
        cell_diagram(load_genotype("face"), "upsample", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
