"""The validation split by identity (`pocketnet-data holdout`) on the real lfw-dev pack."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from pocketnet.data.cli import main as data_main
from pocketnet.data.face_rec import open_rec
from pocketnet.data.verification_bin import load_bin
from tests.conftest import LFW_DEV


def _digests(source) -> list[str]:
    return [hashlib.sha1(bytes(source.read(i)[0])).hexdigest() for i in range(len(source))]


def test_holdout_keeps_the_held_out_faces_out_of_training(tmp_path):
    out = tmp_path / "split"
    assert data_main(["holdout", str(LFW_DEV), str(out), "--identities", "184"]) == 0
    full, layout = open_rec(LFW_DEV)
    train, train_layout = open_rec(out)
    assert train_layout.num_classes == 1184 - 184
    by_image = dict(zip(_digests(full), full.labels.tolist(), strict=True))
    kept = _digests(train)
    kept_ids = {by_image[d] for d in kept}
    assert len(kept_ids) == 1000 and len(kept) == sum(np.isin(full.labels, list(kept_ids)))
    # each kept identity's images, in order, under one new label
    assert np.array_equal(np.unique(train.labels), np.arange(1000))

    pairs = load_bin(out / "holdout.bin")
    assert len(pairs.issame) == 1000 and int(pairs.issame.sum()) == 500
    folds = pairs.issame.view(10, 100)
    assert folds[:, :50].all() and not folds[:, 50:].any()  # LFW's fold order
    owner = [by_image[hashlib.sha1(img).hexdigest()] for img in pairs.images]
    assert not set(owner) & kept_ids  # no held-out face was trained on
    assert len(set(owner)) > 150
    same = [owner[2 * i] == owner[2 * i + 1] for i in range(1000)]
    assert same == pairs.issame.tolist()
    keys = {tuple(sorted(pairs.images[2 * i : 2 * i + 2])) for i in range(1000)}
    assert len(keys) == 1000  # distinct pairs


def test_holdout_refuses_impossible_requests(tmp_path, capsys):
    assert data_main(["holdout", str(LFW_DEV), str(tmp_path), "--identities", "1184"]) == 1
    assert "hold out 2..1183" in capsys.readouterr().err
    assert data_main(["holdout", str(LFW_DEV), str(tmp_path), "--identities", "5"]) == 1
    assert "allow" in (err := capsys.readouterr().err) and "matched pairs" in err


@pytest.mark.parametrize("pairs", ["990", "0"])
def test_holdout_pairs_must_fill_ten_folds(tmp_path, capsys, pairs):
    args = ["holdout", str(LFW_DEV), str(tmp_path), "--identities", "100", "--pairs", pairs]
    assert data_main(args) == 1
    assert "multiple of 20" in capsys.readouterr().err
