"""The embedded synthetic faces: determinism, open-set split, pair layout, difficulty, cache."""

from __future__ import annotations

from dataclasses import fields, replace

import numpy as np
import pytest
from PIL import Image

from pocketnet.data import synthetic
from pocketnet.data.synthetic import (
    LATENT_FIELDS,
    SyntheticFaces,
    SyntheticSpec,
    generate,
    identity_latents,
    load_or_generate,
    save_grid,
)

TINY = SyntheticSpec(
    resolution=24,
    num_train_identities=3,
    images_per_identity=2,
    num_val_identities=4,
    num_pairs=40,
    seed=3,
)


@pytest.fixture(scope="module")
def tiny() -> SyntheticFaces:
    return generate(TINY, progress=False)


def _assert_same(a: SyntheticFaces, b: SyntheticFaces) -> None:
    for field in fields(SyntheticFaces):
        x, y = getattr(a, field.name), getattr(b, field.name)
        assert x.dtype == y.dtype, field.name
        np.testing.assert_array_equal(x, y, err_msg=field.name)


def _tenfold_accuracy(scores: np.ndarray, issame: np.ndarray) -> float:
    """Mean accuracy over 10 folds in file order; threshold (same if score >= t) from the rest."""
    folds = np.arange(len(scores)) // (len(scores) // 10)
    thresholds = np.unique(scores)
    accuracies = []
    for k in range(10):
        rest, held = folds != k, folds == k
        hits = (scores[rest, None] >= thresholds) == issame[rest, None]
        best = thresholds[np.argmax(hits.mean(0))]
        accuracies.append(((scores[held] >= best) == issame[held]).mean())
    return float(np.mean(accuracies))


def test_same_spec_gives_identical_arrays(tiny):
    _assert_same(generate(TINY, progress=False), tiny)


def test_different_seed_gives_different_faces(tiny):
    other = generate(replace(TINY, seed=4), progress=False)
    assert not np.array_equal(other.train_images, tiny.train_images)
    assert not np.array_equal(other.pair_images, tiny.pair_images)


def test_shapes_dtypes_and_labels(tiny):
    n, res, pairs = 3 * 2, TINY.resolution, TINY.num_pairs
    assert tiny.train_images.shape == (n, res, res, 3) and tiny.train_images.dtype == np.uint8
    assert tiny.pair_images.shape == (2 * pairs, res, res, 3) and tiny.pair_images.dtype == np.uint8
    assert tiny.train_labels.dtype == np.int64 and tiny.issame.dtype == np.bool_
    np.testing.assert_array_equal(tiny.train_labels, [0, 0, 1, 1, 2, 2])
    assert tiny.issame.shape == (pairs,)
    # Images are not blank: each has real contrast.
    assert (tiny.train_images.reshape(n, -1).std(1) > 10).all()


def test_pairs_laid_out_as_ten_folds_of_matched_then_mismatched(tiny):
    per_fold = TINY.num_pairs // 10
    expected = np.tile(np.repeat([True, False], per_fold // 2), 10)
    np.testing.assert_array_equal(tiny.issame, expected)
    # A matched pair holds two different images (independent nuisance).
    first, second = tiny.pair_images[0::2], tiny.pair_images[1::2]
    assert all(not np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_pair_identities_match_issame():
    ids, issame = synthetic._pair_layout(np.random.default_rng(0), 1200, 3)
    assert ids.shape == (2400,) and ids.min() >= 0 and ids.max() < 3
    np.testing.assert_array_equal(ids[0::2] == ids[1::2], issame)
    assert issame.sum() == 600


def test_verification_identities_are_disjoint_from_training():
    spec = SyntheticSpec(num_train_identities=400, num_val_identities=300)
    train, val = identity_latents(spec, "train"), identity_latents(spec, "verification")
    assert train.shape == (400, len(LATENT_FIELDS)) and val.shape == (300, len(LATENT_FIELDS))
    # No verification identity is (close to) a training identity.
    distances = np.sqrt(((train[:, None, :] - val[None, :, :]) ** 2).sum(-1))
    assert distances.min() > 0.5
    # A separate stream: the verification identities do not depend on the training ones.
    more_train = replace(spec, num_train_identities=7)
    np.testing.assert_array_equal(identity_latents(more_train, "verification"), val)
    with pytest.raises(ValueError, match="split"):
        identity_latents(spec, "test")


def test_pairs_do_not_depend_on_training_counts(tiny):
    other = generate(replace(TINY, num_train_identities=5, images_per_identity=3), progress=False)
    np.testing.assert_array_equal(other.pair_images, tiny.pair_images)
    np.testing.assert_array_equal(other.issame, tiny.issame)


def test_raw_pixel_cosine_is_far_from_solving_the_pairs():
    spec = SyntheticSpec(resolution=32, num_train_identities=1, num_pairs=600, seed=1)
    faces = generate(spec, progress=False)
    x = faces.pair_images.reshape(len(faces.pair_images), -1).astype(np.float64)
    x -= x.mean(1, keepdims=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    accuracy = _tenfold_accuracy((x[0::2] * x[1::2]).sum(1), faces.issame)
    assert 0.5 <= accuracy <= 0.70


def test_cache_is_written_once_then_loaded(tmp_path, monkeypatch):
    first = load_or_generate(TINY, tmp_path, progress=False)
    (path,) = tmp_path.iterdir()
    assert path.suffix == ".npz"
    stamp = path.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("generate() called although the cache exists")

    monkeypatch.setattr(synthetic, "generate", fail)
    second = load_or_generate(TINY, tmp_path, progress=False)
    _assert_same(second, first)
    assert list(tmp_path.iterdir()) == [path] and path.stat().st_mtime_ns == stamp


def test_cache_name_depends_on_spec_and_generator_version(tmp_path, monkeypatch):
    load_or_generate(TINY, tmp_path, progress=False)
    load_or_generate(replace(TINY, seed=5), tmp_path, progress=False)
    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
    load_or_generate(TINY, tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.npz"))) == 3
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("resolution", 8),
        ("resolution", 48.0),
        ("num_train_identities", 0),
        ("images_per_identity", 1),
        ("num_val_identities", 1),
        ("num_pairs", 30),
        ("num_pairs", 0),
        ("seed", -1),
    ],
)
def test_bad_spec_raises_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"SyntheticSpec.{field}="):
        SyntheticSpec(**{field: value})


def test_save_grid_writes_a_contact_sheet(tiny, tmp_path):
    path = tmp_path / "grid.png"
    save_grid(tiny.train_images, path, ncols=4)
    with Image.open(path) as image:
        assert image.size == (4 * (24 + 2), 2 * (24 + 2))
