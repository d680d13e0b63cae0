"""IJB-style template evaluation: aggregation, pair scores, metrics, metadata I/O, lfw-dev."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pocketnet.data.encoded import decode_rgb
from pocketnet.data.templates import (
    TemplateSet,
    read_template_set,
    write_lfw_template_set,
    write_template_set,
)
from pocketnet.evaluation.templates import (
    evaluate_templates,
    template_features,
    template_pair_scores,
    template_roc,
)
from tests.conftest import LFW_DEV

LFW_TEST = LFW_DEV / "test"
# two real lfw-dev images, for hand-written metadata
IMG_A = "Abdullah_Gul/Abdullah_Gul_0013.jpg"
IMG_B = "Abdullatif_Sener/Abdullatif_Sener_0001.jpg"


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_template_features_average_media_then_sum_then_normalise(as_tensor: bool) -> None:
    e1, e2, e3 = np.eye(3)
    # rows interleave templates; media id 3 exists in both templates and must stay two media
    rows = [
        (7, 3, 2 * e1),
        (2, 9, e2 + e3),
        (7, 3, 2 * e1),
        (7, 4, 5 * e2),  # template 7's single-image media
        (2, 3, -e1),
        (7, 3, 2 * e1),
        (2, 9, e2 - e3),
    ]
    emb = np.stack([r[2] for r in rows])
    templates, medias = [r[0] for r in rows], [r[1] for r in rows]
    ids, feats = template_features(torch.from_numpy(emb) if as_tensor else emb, templates, medias)
    assert isinstance(feats, torch.Tensor) and feats.dtype == torch.float64
    np.testing.assert_array_equal(ids, [2, 7])
    # template 2: media 3 = -e1, media 9 = mean(e2+e3, e2-e3) = e2 -> (-e1 + e2) / sqrt(2)
    # template 7: media 3 = mean of three 2*e1 = 2*e1, media 4 = 5*e2 -> (2, 5, 0) / sqrt(29)
    expected = np.stack([_unit(-e1 + e2), _unit(2 * e1 + 5 * e2)])
    np.testing.assert_allclose(feats.numpy(), expected, atol=1e-12)


def test_single_image_media_weighs_as_much_as_a_three_image_media() -> None:
    e1, e2 = np.eye(2, dtype=np.float32)
    emb = np.stack([e1, e1, e1, e2])
    _, feats = template_features(emb, [1, 1, 1, 1], [10, 10, 10, 11])
    assert feats.dtype == torch.float32
    f = feats[0].numpy()
    np.testing.assert_allclose(f, [math.sqrt(0.5)] * 2, atol=1e-6)  # not (3, 1) / sqrt(10)
    assert f @ e1 == pytest.approx(f @ e2)


def test_template_features_rejects_mismatched_ids() -> None:
    with pytest.raises(ValueError, match="N template and media ids"):
        template_features(np.zeros((3, 4)), [1, 1], [1, 1, 1])


def test_pair_scores_are_cosines() -> None:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(4, 8))  # not unit length: the score is still the cosine
    ids = np.array([40, 10, 30, 20])  # any order
    pairs = np.array([[10, 20], [20, 10], [40, 40], [30, 10], [40, 20]])
    scores = template_pair_scores(ids, feats, pairs, batch_size=2)
    row = {t: i for i, t in enumerate(ids)}
    expected = [
        _unit(feats[row[a]]) @ _unit(feats[row[b]]) for a, b in pairs.tolist()
    ]  # hand-computed cosines
    np.testing.assert_allclose(scores, expected, atol=1e-12)
    assert scores[2] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="pair 1 names template 99"):
        template_pair_scores(ids, feats, [[10, 20], [20, 99]])


def test_evaluate_templates_by_hand() -> None:
    pos = [0.9, 0.6, 0.4]
    neg = [0.7, 0.5, 0.3, 0.2, 0.1, 0.05, 0.0, -0.1, -0.2, -0.3]
    scores, labels = np.array(pos + neg), np.array([1] * 3 + [0] * 10)
    result = evaluate_templates(scores, labels, fars=(1e-2, 1e-1, 5e-1))
    # positive beats negative: 0.9 -> 10, 0.6 -> 9, 0.4 -> 8 of 30 pairs
    # FAR 0.1 allows 1 negative: accept >= 0.6 -> 2 of 3; FAR 0.5 allows 5: accept >= 0.1 -> all
    # FAR 0.01 needs 100 negatives: left out
    assert result == pytest.approx({"auc": 27 / 30, "tar@far=1e-1": 2 / 3, "tar@far=5e-1": 1.0})
    far, tar, thresholds = template_roc(scores, labels)
    assert (far[0], tar[0], thresholds[0]) == (0.0, 0.0, math.inf)
    assert (far[-1], tar[-1], thresholds[-1]) == (1.0, 1.0, -0.3)
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= 0)
    np.testing.assert_allclose(far[thresholds == 0.6], 0.1)
    with pytest.raises(ValueError, match="both same"):
        evaluate_templates(scores[:3], labels[:3])


@pytest.fixture(scope="module")
def lfw_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_lfw_template_set(LFW_TEST, tmp_path_factory.mktemp("ijb"), name="lfw_dev")


def test_lfw_template_set_structure(lfw_set: tuple[Path, Path], tmp_path: Path) -> None:
    meta, pairs = lfw_set
    assert (meta.name, pairs.name) == (
        "lfw_dev_face_tid_mid.txt",
        "lfw_dev_template_pair_label.txt",
    )
    ts = read_template_set(meta, pairs, LFW_TEST)
    media = np.unique(np.stack([ts.templates, ts.medias], axis=1), axis=0)
    assert (len(ts.names), len(np.unique(ts.templates)), len(media)) == (947, 722, 762)
    assert (len(ts.pairs), int(ts.labels.sum())) == (10_361, 361)
    assert all(p.is_file() for p in ts.paths)
    # every template is one identity; positives pair two templates of one identity
    owner = {}
    for name, t in zip(ts.names, ts.templates.tolist(), strict=True):
        assert owner.setdefault(t, name.split("/")[0]) == name.split("/")[0]
    same = np.array([owner[a] == owner[b] for a, b in ts.pairs.tolist()])
    np.testing.assert_array_equal(same, ts.labels)
    assert len({tuple(sorted(p)) for p in ts.pairs.tolist()}) == len(ts.pairs)
    # some templates have several media, some media several images
    assert np.bincount(media[:, 0]).max() == 2 and np.bincount(ts.medias).max() == 2
    # deterministic for a seed, another seed draws other negatives
    again = write_lfw_template_set(LFW_TEST, tmp_path / "again", name="lfw_dev")
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in lfw_set]
    other = write_lfw_template_set(LFW_TEST, tmp_path / "other", seed=1, name="lfw_dev")
    assert other[0].read_bytes() == meta.read_bytes()
    assert other[1].read_bytes() != pairs.read_bytes()


def test_read_write_round_trip(lfw_set: tuple[Path, Path], tmp_path: Path) -> None:
    ts = read_template_set(*lfw_set, LFW_TEST)
    paths = tmp_path / "m.txt", tmp_path / "p.txt"
    write_template_set(ts, *paths)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in lfw_set]
    back = read_template_set(*paths, LFW_TEST)
    assert back.root == ts.root and back.names == ts.names
    for field in ("templates", "medias", "pairs", "labels"):
        np.testing.assert_array_equal(getattr(back, field), getattr(ts, field))
    bad = TemplateSet(ts.root, ["a b.jpg"], ts.templates[:1], ts.medias[:1], ts.pairs, ts.labels)
    with pytest.raises(ValueError, match="whitespace"):
        write_template_set(bad, *paths)


GOOD_META = f"{IMG_A} 1 1\n{IMG_A} 1 2\n{IMG_B} 2 3\n"
GOOD_PAIRS = "1 2 0\n1 1 1\n"


@pytest.mark.parametrize(
    ("meta", "pairs", "error", "where", "message"),
    [
        (f"{IMG_A} 1 1\n{IMG_B} 2\n", GOOD_PAIRS, ValueError, "meta:2", "expected 'image_name"),
        (f"{IMG_A} 1 1\n\n{IMG_B} x 3\n", GOOD_PAIRS, ValueError, "meta:3", "got"),
        (f"{IMG_A} 1 1 0.5\n", GOOD_PAIRS, ValueError, "meta:1", "media_id'"),
        (
            f"{IMG_A} 1 1\nNobody/Nobody_0001.jpg 2 2\n",
            GOOD_PAIRS,
            FileNotFoundError,
            "meta:2",
            "Nobody_0001.jpg does not exist",
        ),
        ("\n", GOOD_PAIRS, ValueError, "meta", "no images"),
        (GOOD_META, "1 2 0\n\n1 2\n", ValueError, "pairs:3", "expected 'template1 template2"),
        (GOOD_META, "1 2 0\n1 two 1\n", ValueError, "pairs:2", "got '1 two 1'"),
        (GOOD_META, "1 2 0 1\n", ValueError, "pairs:1", "expected"),
        (GOOD_META, "1 2 0\n\n2 7 0\n", ValueError, "pairs:3", "template 7 has no image"),
        (GOOD_META, "5 1 0\n", ValueError, "pairs:1", "template 5 has no image"),
        (GOOD_META, "1 2 0\n# c\n", ValueError, "pairs:2", "expected"),
        (GOOD_META, "1 2 0\n1 1 1\n\n2 1 2\n", ValueError, "pairs:4", "label 2 is not 0 or 1"),
        (GOOD_META, "1 2 -1\n", ValueError, "pairs:1", "label -1"),
        (GOOD_META, "\n\n", ValueError, "pairs", "no pairs"),
    ],
)
def test_malformed_metadata_names_file_and_line(
    tmp_path: Path, meta: str, pairs: str, error: type, where: str, message: str
) -> None:
    files = {"meta": tmp_path / "s_face_tid_mid.txt", "pairs": tmp_path / "s_template_pair.txt"}
    files["meta"].write_text(meta)
    files["pairs"].write_text(pairs)
    kind, _, line = where.partition(":")
    located = f"{files[kind]}:{line}: " if line else f"{files[kind]}: "
    with pytest.raises(error) as info:
        read_template_set(files["meta"], files["pairs"], LFW_TEST)
    assert str(info.value).startswith(located) and message in str(info.value)


def test_missing_files_and_folder(tmp_path: Path) -> None:
    meta, pairs = tmp_path / "m.txt", tmp_path / "p.txt"
    meta.write_text(GOOD_META)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{pairs}: no such file")):
        read_template_set(meta, pairs, LFW_TEST)
    pairs.write_text(GOOD_PAIRS)
    with pytest.raises(FileNotFoundError, match="no such image folder"):
        read_template_set(meta, pairs, tmp_path / "nowhere")
    ts = read_template_set(meta, pairs, LFW_TEST)
    np.testing.assert_array_equal(ts.medias, [1, 2, 3])
    np.testing.assert_array_equal(ts.labels, [False, True])


def _pixel_embeddings(paths: list[Path]) -> torch.Tensor:
    """Raw RGB pixels at 16x16 (antialiased), mean-removed per image: (N, 768), not normalised."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny decodes: a thread pool only adds overhead
    try:
        images = torch.stack([decode_rgb(bytearray(p.read_bytes()), str(p)) for p in paths]).float()
    finally:
        torch.set_num_threads(threads)
    pixels = F.interpolate(images, (16, 16), mode="bilinear", antialias=True).flatten(1)
    return pixels - pixels.mean(dim=1, keepdim=True)


def test_lfw_dev_end_to_end_with_raw_pixels(lfw_set: tuple[Path, Path]) -> None:
    ts = read_template_set(*lfw_set, LFW_TEST)
    ids, feats = template_features(_pixel_embeddings(ts.paths), ts.templates, ts.medias)
    assert feats.shape == (722, 768)
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(722))
    scores = template_pair_scores(ids, feats, ts.pairs)
    assert scores.shape == (10_361,) and np.all(np.abs(scores) <= 1 + 1e-6)
    result = evaluate_templates(scores, ts.labels)
    assert set(result) == {"auc", "tar@far=1e-4", "tar@far=1e-3", "tar@far=1e-2", "tar@far=1e-1"}
    tars = [result[f"tar@far={f}"] for f in ("1e-4", "1e-3", "1e-2", "1e-1")]
    assert all(0 <= t <= 1 for t in tars) and tars == sorted(tars)
    assert result["auc"] > 0.6  # raw pixels: about 0.66
    # control: shuffled labels carry no information (AUC std per shuffle about 0.016)
    rng = np.random.default_rng(0)
    shuffled = [evaluate_templates(scores, rng.permutation(ts.labels))["auc"] for _ in range(20)]
    assert abs(np.mean(shuffled) - 0.5) < 0.02
