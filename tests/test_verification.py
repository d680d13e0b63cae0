"""Verification protocol (docs/METHODS.md, "Verification") and the safe .bin reader."""

from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pocketnet.data.verification_bin import UnsafeBinError, load_bin
from pocketnet.evaluation.verification import (
    VerificationMetric,
    evaluate_verification,
    verification_scores,
)
from tests.conftest import LFW_DEV

LFW_DEV_BIN = LFW_DEV / "lfw_dev_test.bin"


def pairs_with_distances(dist, scale: float = 1.0) -> torch.Tensor:
    """(2N, 2) embeddings whose pair i has squared distance dist[i] once L2-normalised."""
    d = torch.as_tensor(dist, dtype=torch.float64)
    theta = torch.arccos(1 - d / 2)  # |(1, 0) - (cos t, sin t)|^2 = 2 - 2 cos t
    first = torch.stack([torch.ones_like(d), torch.zeros_like(d)], dim=1)
    second = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    return scale * torch.stack([first, second], dim=1).reshape(-1, 2)


def reference_protocol(emb: np.ndarray, issame: np.ndarray, nfolds: int = 10):
    """insightface-style calculate_roc, written with plain loops: KFold, thresholds, argmax."""
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    dist = np.sum(np.square(emb[0::2] - emb[1::2]), axis=1)
    n = len(dist)
    thresholds = np.arange(0, 4, 0.01)
    sizes = [n // nfolds + (1 if k < n % nfolds else 0) for k in range(nfolds)]
    accs, best = [], []
    start = 0
    for size in sizes:
        test = np.arange(start, start + size)
        train = np.setdiff1d(np.arange(n), test)
        start += size
        train_acc = np.zeros(len(thresholds))
        for j, t in enumerate(thresholds):
            train_acc[j] = np.mean((dist[train] < t) == issame[train])
        b = int(np.argmax(train_acc))
        best.append(thresholds[b])
        accs.append(np.mean((dist[test] < thresholds[b]) == issame[test]))
    return float(np.mean(accs)), float(np.std(accs)), float(np.mean(best))


# Hand-checked case: 20 pairs, 10 folds of 2 (fold k = pairs 2k, 2k+1); P = same, N = different.
#   folds 0-5: P at 0.205..0.705 (step 0.1), N at 1.505..2.005   fold 6: P 0.805, N 0.855
#   fold 7: P 1.205, N 2.105   fold 8: P 0.905, N 2.205          fold 9: P 1.005, N 1.105
# Correct pairs over all 20 ("same" iff d < t): 17 for t in (0.805, 0.855], 16 in (0.855, 0.905],
# 17 in (0.905, 1.005], 18 in (1.005, 1.105], 17 in (1.105, 1.205], 18 in (1.205, 1.505], less
# elsewhere. Training count of a fold = that minus the fold's own correct pairs:
#   folds 0-5 (2 correct on both 18-plateaus, 2 on (0.805, 0.855]): 16 at 1.01 and 1.21, 15 at
#     0.81 -> 1.01 (tie between plateaus, smallest wins); held out 2/2 = 1.0.
#   fold 6 (1 correct on both plateaus): 17 at 1.01 and 1.21 -> 1.01; N 0.855 < 1.01 -> 0.5.
#   fold 7 (1 correct at 1.01, 2 at 1.21): 17 at 1.01 only -> 1.01; P 1.205 >= 1.01 -> 0.5.
#   fold 8 (2 at 1.01, 2 at 1.21, only N correct at 0.81): 16 at 0.81, 1.01 and 1.21 -> three-way
#     tie, smallest 0.81 wins; P 0.905 >= 0.81 -> 0.5.
#   fold 9 (2 correct on (1.005, 1.105], 1 at 1.21, 1 at 0.81): 16, 17, 16 -> 1.21; N 1.105 < 1.21
#     -> 0.5.
# Accuracy mean (6 * 1 + 4 * 0.5) / 10 = 0.8, population std sqrt((6*0.2^2 + 4*0.3^2)/10) =
# sqrt(0.06); mean threshold (8 * 1.01 + 0.81 + 1.21) / 10 = 1.01.
# AUC: P 0.205..0.805 beat all 10 N (70), P 0.905 and 1.005 beat 9 each (not N 0.855),
# P 1.205 beats 8 (not 0.855, 1.105) -> 96 / 100.
HAND_DIST = [0.205, 1.505, 0.305, 1.605, 0.405, 1.705, 0.505, 1.805, 0.605, 1.905,
             0.705, 2.005, 0.805, 0.855, 1.205, 2.105, 0.905, 2.205, 1.005, 1.105]  # fmt: skip
HAND_SAME = [True, False] * 10


def test_hand_checked_case():
    dist = torch.tensor(HAND_DIST, dtype=torch.float64)
    emb = pairs_with_distances(dist, scale=3.0).float()  # scale: the protocol normalises
    torch.testing.assert_close(verification_scores(emb), dist, atol=1e-6, rtol=0)
    r = evaluate_verification(emb, torch.tensor(HAND_SAME))
    assert r.num_pairs == 20
    assert r.accuracy == pytest.approx(0.8, abs=1e-12)
    assert r.accuracy_std == pytest.approx(math.sqrt(0.06), abs=1e-12)
    assert r.threshold == pytest.approx(1.01, abs=1e-12)
    assert r.auc == pytest.approx(0.96, abs=1e-12)
    assert r.tar_at_far == {}  # 10 negatives: neither 1e-3 nor 1e-4 is measurable
    assert set(r.as_dict("lfw/")) == {"lfw/acc", "lfw/acc_std", "lfw/threshold", "lfw/auc"}
    # The same numbers from the loop reference (its tie rule is np.argmax: first maximum).
    ref = reference_protocol(emb.double().numpy(), np.array(HAND_SAME))
    assert ref == pytest.approx((0.8, math.sqrt(0.06), 1.01), abs=1e-12)


def test_same_is_strictly_below_threshold():
    # Identical images (distance exactly 0) and orthogonal ones (exactly 2.0 = thresholds[200]).
    # "same" iff d < t: t = 0 calls every pair different (train 9/18 per fold), t in 0.01..2.0
    # separates all (18/18) -> 0.01 in every fold. With d <= t it would be 0.0.
    e = torch.eye(2).repeat(20, 1)  # pairs (e0, e1): orthogonal
    same = torch.arange(20) % 2 == 0
    e[2 * torch.nonzero(same).flatten() + 1] = e[2 * torch.nonzero(same).flatten()]
    assert verification_scores(e).tolist() == [0.0, 2.0] * 10
    r = evaluate_verification(e, same)
    assert r.accuracy == 1.0 and r.threshold == pytest.approx(0.01, abs=1e-12)


@pytest.mark.parametrize("n", [600, 607])  # 607: uneven folds (the first 7 get 61 pairs)
def test_matches_loop_reference(n):
    rng = np.random.default_rng(n)
    issame = rng.random(n) < 0.5
    emb = rng.standard_normal((2 * n, 64)).astype(np.float32)
    emb[1::2][issame] = emb[0::2][issame] + 3.0 * rng.standard_normal((issame.sum(), 64))
    r = evaluate_verification(torch.from_numpy(emb), torch.from_numpy(issame))
    acc, std, thr = reference_protocol(emb.astype(np.float64), issame)
    assert 0.6 < acc < 0.99  # a non-trivial case: thresholds matter
    assert r.accuracy == acc
    assert r.accuracy_std == pytest.approx(std, abs=1e-15)
    assert r.threshold == thr


def test_tar_at_far_and_auc_with_ties():
    # 1000 negatives: 1 at 0.3, 1 at 0.4, 998 at 1.9; 1000 positives: 100 at 0.1, 400 at 0.4
    # (tied with a negative), 500 at 1.0. ROC points (tp, fp) by growing distance threshold:
    # (0,0) (100,0) (100,1) (500,2) (1000,2) (1000,1000). FAR <= 1e-3 allows fp <= 1 -> TAR 0.1
    # (the tied group at 0.4 is not split); FAR <= 2e-3 allows fp <= 2 -> TAR 1.0; 1e-4 needs
    # 10,000 negatives -> omitted.
    # AUC: 100 * 1000 + 400 * (998 + 0.5) + 500 * 998 = 998,400 over 1e6 pairs.
    dist = [0.3, 0.4] + [1.9] * 998 + [0.1] * 100 + [0.4] * 400 + [1.0] * 500
    issame = torch.tensor([False] * 1000 + [True] * 1000)
    r = evaluate_verification(pairs_with_distances(dist), issame, fars=(1e-3, 2e-3, 1e-4))
    assert r.tar_at_far == {1e-3: pytest.approx(0.1), 2e-3: pytest.approx(1.0)}
    assert r.auc == pytest.approx(0.9984, abs=1e-12)
    d = r.as_dict()
    assert d["tar@far=1e-3"] == pytest.approx(0.1) and d["tar@far=2e-3"] == pytest.approx(1.0)
    assert "tar@far=1e-4" not in d
    # With 999 negatives even 1e-3 is not measurable.
    r = evaluate_verification(pairs_with_distances(dist[1:]), issame[1:])
    assert r.tar_at_far == {}


def test_metric_shuffled_batches_with_duplicates():
    gen = torch.Generator().manual_seed(0)
    issame = torch.rand(300, generator=gen) < 0.5
    emb = torch.randn(600, 32, generator=gen)
    emb[1::2][issame] = emb[0::2][issame] + 0.8 * torch.randn(int(issame.sum()), 32, generator=gen)
    expected = evaluate_verification(emb, issame).as_dict()

    order = torch.randperm(600, generator=gen)
    order = torch.cat([order, order[:5]])  # DistributedSampler-like padding by repetition
    # Also through the DDP sync path (world size 1): list states become one gathered tensor.
    synced = {"dist_sync_fn": lambda t, group=None: [t], "distributed_available_fn": lambda: True}
    for kwargs in ({}, synced):
        metric = VerificationMetric(issame.tolist(), **kwargs)
        for idx in torch.split(order, [100, 37, 250, 1, 217]):
            metric.update(emb[idx], idx)
        out = metric.compute()
        assert set(out) == set(expected)
        for k, v in expected.items():
            assert out[k].dtype == torch.float32
            assert out[k].item() == pytest.approx(v, abs=1e-6), k

    metric.reset()
    metric.update(emb[:3], torch.tensor([0, 1, 600]))
    with pytest.raises(RuntimeError, match=r"1 indices out of range \(first: \[600\]\)"):
        metric.compute()


def test_limited_validation_is_judged_on_the_complete_pairs_it_saw():
    gen = torch.Generator().manual_seed(1)
    issame = torch.rand(300, generator=gen) < 0.5
    emb = torch.randn(600, 32, generator=gen)
    emb[1::2][issame] = emb[0::2][issame] + 0.8 * torch.randn(int(issame.sum()), 32, generator=gen)
    seen = torch.cat([torch.arange(0, 161), torch.tensor([401, 400, 403])])  # 81 pairs + 2 halves
    expected = evaluate_verification(
        torch.cat([emb[:160], emb[400:402]]), torch.cat([issame[:80], issame[200:201]])
    )
    metric = VerificationMetric(issame.tolist())
    metric.update(emb[seen.flip(0)], seen.flip(0))
    with pytest.warns(UserWarning, match="figures on 81 of 300 pairs"):
        out = metric.compute()
    assert out["acc"].item() == pytest.approx(expected.accuracy, abs=1e-6)
    assert out["auc"].item() == pytest.approx(expected.auc, abs=1e-6)

    metric.reset()
    metric.update(emb[:19], torch.arange(19))
    with pytest.raises(RuntimeError, match="saw 9 complete pairs of 300: 10-fold"):
        metric.compute()


# --- the shipped real set ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def lfw_dev():
    return load_bin(LFW_DEV_BIN)


def test_lfw_dev_bin_structure(lfw_dev):
    assert lfw_dev.name == "lfw_dev_test"
    assert len(lfw_dev) == 2000 and lfw_dev.issame.shape == (1000,)
    assert lfw_dev.issame.dtype == torch.bool and int(lfw_dev.issame.sum()) == 500
    for i in (0, 1, 1999):
        img = lfw_dev.decode(i)
        assert img.shape == (3, 112, 112) and img.dtype == torch.uint8


def test_lfw_dev_raw_pixel_anchor(lfw_dev):
    # FORMATS.md: "raw-pixel cosine (grey 56x56, mean-removed) scores 63.1%". Reproduced by PIL
    # grey (convert("L")) then PIL's default bicubic resize to 56x56, no flip, each image minus
    # its own mean.
    grey = [
        np.asarray(
            Image.open(io.BytesIO(b)).convert("L").resize((56, 56), Image.Resampling.BICUBIC)
        )
        for b in lfw_dev.images
    ]
    x = torch.tensor(np.stack(grey), dtype=torch.float64).flatten(1)
    r = evaluate_verification(x - x.mean(dim=1, keepdim=True), lfw_dev.issame)
    assert r.accuracy == pytest.approx(0.631, abs=1e-4)
    assert r.auc == pytest.approx(0.666356, abs=1e-6)


def test_lfw_dev_seeded_tiny_net(lfw_dev):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(128, 64),
    ).eval()
    images = torch.stack([lfw_dev.decode(i) for i in range(len(lfw_dev))])
    with torch.no_grad():
        x = (images.float() / 255 - 0.5) / 0.5
        emb = torch.cat([net(b) + net(b.flip(-1)) for b in x.split(500)])
    r = evaluate_verification(emb, lfw_dev.issame)
    assert r.accuracy == pytest.approx(0.616, abs=1e-4)
    assert r.threshold == pytest.approx(0.114, abs=1e-9)
    assert r.auc == pytest.approx(0.676508, abs=1e-5)
    assert r.tar_at_far == {}  # 500 negatives < 1 / 1e-3
    assert "tar@far=1e-3" not in r.as_dict()


# --- the restricted unpickler -----------------------------------------------------------------


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


def test_refuses_code_in_pickle(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([b"a", b"b"], [_Evil(marker)])))
    with pytest.raises(UnsafeBinError, match=rf"evil\.bin.*'{os.system.__module__}\.system'"):
        load_bin(path)
    assert not marker.exists()


def test_refuses_numpy_labels(tmp_path):
    path = tmp_path / "np.bin"
    path.write_bytes(pickle.dumps(([b"a", b"b"], [np.bool_(True)])))
    with pytest.raises(UnsafeBinError, match="numpy"):
        load_bin(path)


def test_refuses_non_bool_labels(tmp_path):
    path = tmp_path / "ints.bin"
    path.write_bytes(pickle.dumps(([b"a", b"b", b"c", b"d"], [True, 1])))
    with pytest.raises(ValueError, match=r"ints\.bin.*label 1 is 1 \(int\), expected a bool"):
        load_bin(path)


def test_refuses_odd_image_count(tmp_path):
    path = tmp_path / "odd.bin"
    path.write_bytes(pickle.dumps(([b"a", b"b", b"c"], [True])))
    with pytest.raises(ValueError, match=r"odd\.bin.*odd number of images \(3\)"):
        load_bin(path)


def test_reads_python2_style_pickle(tmp_path):
    # Python 2 str pickles as (SHORT_)BINSTRING; encoding="bytes" keeps them bytes.
    path = tmp_path / "py2.bin"
    path.write_bytes(b"\x80\x02(]q\x00(U\x01aU\x01be]q\x01\x88atq\x02.")
    vb = load_bin(path)
    assert vb.images == [b"a", b"b"] and vb.issame.tolist() == [True]
