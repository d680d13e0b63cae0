"""Embedded synthetic face data: procedurally rendered face-like identities, no download.

An *identity* is a vector of latent parameters (head shape; placement and shape of the eyes,
brows, nose, mouth and ears; skin, hair, iris and lip colours; hair style, facial hair, a skin
texture such as freckles or stripes). An *image* renders an identity under random nuisance:
in-plane rotation, scale, shift, a yaw-like horizontal shift of the inner features, expression,
background and clothing, an illumination gradient, colour jitter, blur, noise and partial
occlusion (a random bar or a glasses band). Everything is drawn with vectorised numpy over
coordinate grids, so any square resolution renders directly, anti-aliased by a smoothstep over
approximate signed distances.

Like real face recognition the task is open-set: the training identities and the verification
identities come from separate seeded random streams, so they are disjoint. The verification pairs
are laid out as LFW View 2: ten folds, each holding ``P/20`` matched pairs then ``P/20``
mismatched pairs; pair ``i`` is ``(pair_images[2i], pair_images[2i + 1])``.

Same spec, same arrays: every random draw comes from a ``numpy`` generator seeded by the spec.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

__all__ = [
    "GENERATOR_VERSION",
    "LATENT_FIELDS",
    "SyntheticFaces",
    "SyntheticSpec",
    "generate",
    "identity_latents",
    "load_or_generate",
    "save_grid",
]

GENERATOR_VERSION = 1
"""Bumped whenever the rendering changes, so stale caches are not reused."""

# fmt: off
LATENT_FIELDS = (
    "head_width", "head_height", "jaw_taper", "skin_tone", "skin_tint_r", "skin_tint_b",
    "hair_hue", "hair_saturation", "hair_value", "hair_volume", "hair_length", "hairline",
    "hairline_slope", "bald", "ear_size", "ear_height",
    "eye_spacing", "eye_height", "eye_width", "eye_aspect", "eye_tilt",
    "iris_hue", "iris_value", "iris_size",
    "brow_gap", "brow_thickness", "brow_length", "brow_tilt", "brow_arch",
    "nose_length", "nose_width", "nose_shade",
    "mouth_height", "mouth_width", "lip_thickness", "smile", "lip_redness",
    "texture_kind", "texture_frequency", "texture_angle", "texture_phase", "texture_contrast",
    "texture_hue", "facial_hair", "mole_x", "mole_y", "mole_size", "cheek_blush",
)
# fmt: on
"""Names of the columns of an identity latent vector; each is uniform on [0, 1)."""

# Independent random streams, each seeded by (spec.seed, stream id).
_STREAMS = {
    "train": 0,
    "verification": 1,
    "train_nuisance": 2,
    "pair_layout": 3,
    "pair_nuisance": 4,
    "noise": 5,
}
# Pixels per rendering batch: large enough for the threads to overlap. Pixel noise is seeded per
# batch, so changing this changes the images: bump GENERATOR_VERSION with it.
_PIXEL_BUDGET = 1 << 17


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate: resolution, identity and image counts, seed. Validated on creation."""

    resolution: int = 112
    num_train_identities: int = 500
    images_per_identity: int = 24
    num_val_identities: int = 300
    num_pairs: int = 1200
    seed: int = 0

    def __post_init__(self) -> None:
        minimums = {
            "resolution": 16,
            "num_train_identities": 1,
            "images_per_identity": 2,
            "num_val_identities": 2,
            "num_pairs": 20,
            "seed": 0,
        }
        for name, low in minimums.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"SyntheticSpec.{name}={value!r}: must be an int >= {low}")
        if self.num_pairs % 20:
            raise ValueError(
                f"SyntheticSpec.num_pairs={self.num_pairs}: must be a multiple of 20 "
                "(10 folds, each of num_pairs/20 matched then num_pairs/20 mismatched pairs)"
            )


@dataclass
class SyntheticFaces:
    """A generated data set: labelled training images and verification pairs."""

    train_images: np.ndarray  # uint8 (N, H, W, 3), N = num_train_identities * images_per_identity
    train_labels: np.ndarray  # int64 (N,), 0..num_train_identities-1
    pair_images: np.ndarray  # uint8 (2P, H, W, 3); pair i is images 2i and 2i+1
    issame: np.ndarray  # bool (P,)


def identity_latents(spec: SyntheticSpec, split: Literal["train", "verification"]) -> np.ndarray:
    """The latent vectors ``(n, len(LATENT_FIELDS))`` of a split's identities.

    Each split draws from its own stream seeded by ``(spec.seed, split)``, so the verification
    identities are disjoint from the training ones and do not depend on the training count.
    """
    counts = {"train": spec.num_train_identities, "verification": spec.num_val_identities}
    if split not in counts:
        raise ValueError(f"split={split!r}: must be one of {sorted(counts)}")
    return _rng(spec, split).random((counts[split], len(LATENT_FIELDS)))


def generate(spec: SyntheticSpec, progress: bool = True) -> SyntheticFaces:
    """Render the data set described by ``spec`` (deterministic: same spec, same arrays)."""
    n_ids, per_id = spec.num_train_identities, spec.images_per_identity
    train_labels = np.repeat(np.arange(n_ids, dtype=np.int64), per_id)
    train_nuisance = _draw_nuisance(_rng(spec, "train_nuisance"), len(train_labels))

    layout_rng = _rng(spec, "pair_layout")
    pair_ids, issame = _pair_layout(layout_rng, spec.num_pairs, spec.num_val_identities)
    pair_nuisance = _draw_nuisance(_rng(spec, "pair_nuisance"), len(pair_ids))

    train = _decode_identities(identity_latents(spec, "train"))
    val = _decode_identities(identity_latents(spec, "verification"))
    jobs = [(train, train_labels, train_nuisance), (val, pair_ids, pair_nuisance)]
    batch = max(1, _PIXEL_BUDGET // spec.resolution**2)
    tasks = [
        (part, start, min(start + batch, len(ids)))
        for part, (_, ids, _) in enumerate(jobs)
        for start in range(0, len(ids), batch)
    ]
    outputs = [
        np.empty((len(ids), spec.resolution, spec.resolution, 3), np.uint8) for _, ids, _ in jobs
    ]

    def render(task: tuple[int, int, int]) -> int:
        part, start, stop = task
        identities, ids, nuisance = jobs[part]
        noise_rng = np.random.default_rng([spec.seed, _STREAMS["noise"], part, start])
        outputs[part][start:stop] = _render(
            {k: v[ids[start:stop]] for k, v in identities.items()},
            {k: v[start:stop] for k, v in nuisance.items()},
            spec.resolution,
            noise_rng,
        )
        return stop - start

    total = sum(len(ids) for _, ids, _ in jobs)
    if hasattr(os, "sched_getaffinity"):
        workers = len(os.sched_getaffinity(0))
    else:
        workers = os.cpu_count() or 1
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=total, desc="synthetic faces", unit="img", disable=not progress) as bar,
    ):
        for done in pool.map(render, tasks):
            bar.update(done)
    return SyntheticFaces(outputs[0], train_labels, outputs[1], issame)


def load_or_generate(
    spec: SyntheticSpec, cache_dir: str | Path, progress: bool = True
) -> SyntheticFaces:
    """Load the data set for ``spec`` from ``cache_dir``, generating and caching it if absent.

    The cache is one uncompressed ``.npz`` named by a hash of the spec and ``GENERATOR_VERSION``;
    it is written to a temporary file first and moved into place atomically.
    """
    cache_dir = Path(cache_dir)
    key = json.dumps({**asdict(spec), "generator_version": GENERATOR_VERSION}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    path = cache_dir / f"synthetic-{spec.resolution}px-{digest}.npz"
    if path.exists():
        with np.load(path) as data:
            return SyntheticFaces(**{name: data[name] for name in data.files})
    faces = generate(spec, progress=progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **asdict(faces))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return faces


def save_grid(images: np.ndarray, path: str | Path, ncols: int = 8) -> None:
    """Save uint8 images ``(N, H, W, 3)`` as a PNG contact sheet with ``ncols`` columns."""
    from PIL import Image

    n, h, w, _ = images.shape
    nrows = -(-n // ncols)
    sheet = np.full((nrows * (h + 2), ncols * (w + 2), 3), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, ncols)
        sheet[r * (h + 2) + 1 : r * (h + 2) + 1 + h, c * (w + 2) + 1 : c * (w + 2) + 1 + w] = image
    Image.fromarray(sheet).save(path)


def _rng(spec: SyntheticSpec, stream: str) -> np.random.Generator:
    return np.random.default_rng([spec.seed, _STREAMS[stream]])


def _pair_layout(
    rng: np.random.Generator, num_pairs: int, num_ids: int
) -> tuple[np.ndarray, np.ndarray]:
    """Identity of each pair image and ``issame``: per fold, matched pairs then mismatched."""
    half = num_pairs // 20
    n_folds = 10
    matched = np.resize(rng.permutation(num_ids), n_folds * half).reshape(n_folds, half)
    first = rng.integers(0, num_ids, (n_folds, half))
    second = (first + rng.integers(1, num_ids, (n_folds, half))) % num_ids  # never == first
    ids = np.empty((n_folds, 2 * half, 2), np.int64)
    ids[:, :half, 0] = ids[:, :half, 1] = matched
    ids[:, half:, 0], ids[:, half:, 1] = first, second
    issame = np.zeros((n_folds, 2 * half), bool)
    issame[:, :half] = True
    return ids.reshape(-1), issame.reshape(-1)


def _lerp(lo: float, hi: float, t: np.ndarray) -> np.ndarray:
    return lo + (hi - lo) * t


def _hsv(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, all inputs in [0, 1]; returns ``(..., 3)``."""
    k = (
        np.stack([np.full_like(h, 5.0), np.full_like(h, 3.0), np.full_like(h, 1.0)], -1)
        + h[..., None] * 6
    ) % 6
    return v[..., None] - (v * s)[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1)


def _decode_identities(latents: np.ndarray) -> dict[str, np.ndarray]:
    """Map uniform latents to geometric parameters (face units) and colours (RGB in [0, 1])."""
    z = dict(zip(LATENT_FIELDS, latents.T, strict=True))
    light, dark = np.array([0.98, 0.83, 0.70]), np.array([0.40, 0.25, 0.16])
    skin = light + (dark - light) * z["skin_tone"][:, None]
    skin = skin + np.stack(
        [
            _lerp(-0.1, 0.1, z["skin_tint_r"]),
            np.zeros(len(latents)),
            _lerp(-0.1, 0.1, z["skin_tint_b"]),
        ],
        -1,
    )
    hair = _hsv(
        z["hair_hue"], _lerp(0.1, 0.9, z["hair_saturation"]), _lerp(0.1, 0.95, z["hair_value"])
    )
    lip_red = _lerp(0.15, 0.75, z["lip_redness"])[:, None]
    kind = np.minimum((z["texture_kind"] * 4).astype(np.int64), 3)
    texture_colour = np.where(
        (z["texture_hue"] < 0.5)[:, None],
        skin * 0.6,  # freckles/shadows: darker skin
        _hsv(z["texture_hue"] * 2 - 1, np.full(len(latents), 0.8), np.full(len(latents), 0.8)),
    )
    p = {
        "head_width": _lerp(0.34, 0.52, z["head_width"]),
        "head_height": _lerp(0.48, 0.68, z["head_height"]),
        "jaw_taper": _lerp(0.0, 0.45, z["jaw_taper"]),
        "skin": np.clip(skin, 0, 1),
        "hair": hair,
        "hair_volume": _lerp(0.04, 0.22, z["hair_volume"]) * (z["bald"] > 0.08),
        "hair_length": _lerp(-0.35, 0.75, z["hair_length"]) * (z["bald"] > 0.08),
        "hairline": np.where(z["bald"] > 0.08, _lerp(-0.55, -0.25, z["hairline"]), -2.0),
        "hairline_slope": _lerp(-0.5, 0.5, z["hairline_slope"]),
        "ear_size": _lerp(0.06, 0.12, z["ear_size"]),
        "ear_height": _lerp(-0.08, 0.08, z["ear_height"]),
        "eye_spacing": _lerp(0.14, 0.23, z["eye_spacing"]),
        "eye_height": _lerp(-0.12, 0.04, z["eye_height"]),
        "eye_width": _lerp(0.065, 0.11, z["eye_width"]),
        "eye_aspect": _lerp(0.35, 0.75, z["eye_aspect"]),
        "eye_tilt": _lerp(-0.3, 0.3, z["eye_tilt"]),
        "iris": _hsv(
            z["iris_hue"], np.full(len(latents), 0.75), _lerp(0.15, 0.85, z["iris_value"])
        ),
        "iris_size": _lerp(0.45, 0.8, z["iris_size"]),
        "brow_gap": _lerp(0.05, 0.12, z["brow_gap"]),
        "brow_thickness": _lerp(0.012, 0.04, z["brow_thickness"]),
        "brow_length": _lerp(0.06, 0.12, z["brow_length"]),
        "brow_tilt": _lerp(-0.35, 0.35, z["brow_tilt"]),
        "brow_arch": _lerp(-2.0, 6.0, z["brow_arch"]),
        "nose_length": _lerp(0.10, 0.24, z["nose_length"]),
        "nose_width": _lerp(0.035, 0.08, z["nose_width"]),
        "nose_shade": _lerp(0.1, 0.35, z["nose_shade"]),
        "mouth_height": _lerp(0.24, 0.40, z["mouth_height"]),
        "mouth_width": _lerp(0.08, 0.17, z["mouth_width"]),
        "lip_thickness": _lerp(0.015, 0.045, z["lip_thickness"]),
        "smile": _lerp(-1.5, 3.5, z["smile"]),
        "lips": np.clip(skin * (1 - lip_red) + np.array([0.75, 0.15, 0.25]) * lip_red, 0, 1),
        # Texture kinds 0 none, 1 freckles, 2 wavy stripes, 3 blotches: one formula, see _render.
        "texture_frequency": _lerp(12.0, 30.0, z["texture_frequency"])
        * np.where(kind == 3, 0.4, 1.0),
        "texture_warp": np.array([0.0, 2.0, 0.5, 1.0])[kind],
        "texture_mix": np.array([0.0, 1.0, 0.0, 1.0])[kind],
        "texture_threshold": np.array([0.0, 0.55, 0.0, 0.2])[kind],
        "texture_angle": z["texture_angle"] * np.pi,
        "texture_phase": z["texture_phase"] * 2 * np.pi,
        "texture_contrast": _lerp(0.35, 0.8, z["texture_contrast"]) * (kind > 0),
        "texture_colour": np.clip(texture_colour, 0, 1),
        "beard": (z["facial_hair"] > 0.7) * _lerp(0.6, 1.0, z["facial_hair"]),
        "moustache": (z["facial_hair"] > 0.55).astype(np.float64),
        "mole_x": _lerp(-0.3, 0.3, z["mole_x"]),
        "mole_y": _lerp(-0.1, 0.35, z["mole_y"]),
        "mole_size": _lerp(0.012, 0.03, z["mole_size"]) * (z["mole_size"] > 0.4),
        "cheek_blush": _lerp(0.0, 0.5, z["cheek_blush"]) * (z["cheek_blush"] > 0.5),
    }
    return p


def _draw_nuisance(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Per-image nuisance: geometry, expression, scene, photometry, occlusion."""
    u = rng.random
    glasses = u(n) < 0.25
    return {
        "shift_x": _lerp(-0.08, 0.08, u(n)),
        "shift_y": _lerp(-0.08, 0.08, u(n)),
        "scale": _lerp(0.9, 1.08, u(n)),
        "rotation": np.clip(rng.normal(0, 0.12, n), -0.3, 0.3),
        "yaw": _lerp(-1.0, 1.0, u(n)),
        "pitch": _lerp(-1.0, 1.0, u(n)),
        "eye_open": np.clip(_lerp(0.2, 1.4, u(n)), 0.2, 1.0),
        "gaze_x": _lerp(-0.3, 0.3, u(n)),
        "mouth_open": np.clip(_lerp(-1.0, 1.0, u(n)), 0, 1),
        "background": u((n, 3)),
        "background_2": u((n, 3)),
        "background_angle": u(n) * 2 * np.pi,
        "clothing": u((n, 3)),
        "light_angle": u(n) * 2 * np.pi,
        "light_strength": _lerp(0.0, 0.3, u(n)),
        "brightness": _lerp(0.88, 1.1, u(n)),
        "channel_gain": _lerp(0.96, 1.04, u((n, 3))),
        "saturation": _lerp(0.9, 1.1, u(n)),
        "blur": _lerp(0.0, 2.0, u(n)) ** 1.5,
        "noise": _lerp(0.0, 0.05, u(n)),
        "glasses": glasses.astype(np.float64),
        "sunglasses": (glasses & (u(n) < 0.4)).astype(np.float64),
        "glasses_colour": u((n, 3)) * 0.6,
        "occluder": (u(n) < 0.2).astype(np.float64),
        "occluder_x": _lerp(-0.8, 0.8, u(n)),
        "occluder_y": _lerp(-0.8, 0.8, u(n)),
        "occluder_w": _lerp(0.08, 0.35, u(n)),
        "occluder_h": _lerp(0.05, 0.2, u(n)),
        "occluder_angle": u(n) * np.pi,
        "occluder_colour": u((n, 3)),
    }


def _smooth(d: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Coverage in [0, 1] from a signed distance (negative inside), edge width ``w``."""
    t = d * (-1.0 / w)
    t += 0.5
    np.clip(t, 0.0, 1.0, out=t)
    t2 = t * t
    t *= -2.0
    t += 3.0
    t *= t2
    return t


def _ellipse(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse at the origin.

    First order near the boundary, ``(q^2 - 1) / |grad q^2|`` with ``q`` the normalised radius;
    floored by ``(q - 1) * min(a, b)``, a bound on the true distance that keeps the estimate from
    collapsing to zero far out along a thin ellipse's long axis.
    """
    inv_a, inv_b = 1.0 / a, 1.0 / b
    xa, yb = x * inv_a, y * inv_b
    q2 = xa * xa
    q2 += yb * yb
    xa *= inv_a
    yb *= inv_b
    xa *= xa
    xa += yb * yb
    np.sqrt(xa, out=xa)  # half the gradient norm of q2
    xa *= 2.0
    xa += 1e-6
    d = q2 - 1.0
    d /= xa
    np.sqrt(q2, out=q2)
    q2 -= 1.0
    q2 *= np.minimum(np.abs(a), np.abs(b))
    return np.maximum(d, q2, out=d)


def _length(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Euclidean norm; ``np.hypot`` is several times slower for float32 arrays."""
    return np.sqrt(x * x + y * y)


def _rotate(x: np.ndarray, y: np.ndarray, angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    return c * x + s * y, c * y - s * x


class _Canvas:
    """A batch of float images painted layer by layer, one ``(B, H, W)`` plane per channel.

    Channel planes keep the pixel axes innermost, so numpy loops over long contiguous rows.
    """

    def __init__(self, planes: list[np.ndarray]):
        self.planes = planes

    def paint(self, alpha: np.ndarray, colour: np.ndarray) -> None:
        """Alpha-blend per-image colours ``(B, 3)`` over the image with ``alpha (B, H, W)``."""
        for plane, c in zip(self.planes, _planes(colour), strict=True):
            delta = c - plane
            delta *= alpha
            plane += delta


def _col(a: np.ndarray) -> np.ndarray:
    """Per-image values ``(B,)`` -> float32 ``(B, 1, 1)`` for broadcasting over pixels."""
    return np.asarray(a, np.float32)[:, None, None]


def _rgb(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float32)


def _planes(colour: np.ndarray) -> np.ndarray:
    """Per-image colours ``(B, 3)`` -> float32 ``(3, B, 1, 1)`` to broadcast over planes."""
    return np.asarray(colour, np.float32).T[:, :, None, None]


def _render(
    p: dict[str, np.ndarray], q: dict[str, np.ndarray], res: int, noise_rng: np.random.Generator
) -> np.ndarray:
    """Render identities ``p`` under nuisance ``q`` at ``res`` x ``res``; uint8 ``(B, H, W, 3)``.

    Symmetric features are drawn in one layer: the union of two shapes is the minimum of their
    signed distances, an intersection the maximum.
    """
    grid = (np.arange(res, dtype=np.float32) + 0.5) / res * 2 - 1
    gx, gy = grid[None, None, :], grid[None, :, None]  # image coordinates in [-1, 1]
    pixel = np.float32(2.0 / res)

    # Face frame: undo shift, rotation and scale; edge width grows with blur.
    scale = _col(q["scale"])
    u, v = _rotate(gx - _col(q["shift_x"]), gy - _col(q["shift_y"]), _col(q["rotation"]))
    u, v = u / scale, v / scale
    w = pixel * (1.0 + _col(q["blur"])) / scale

    angle = _col(q["background_angle"])
    ramp = np.clip(0.5 + 0.5 * (np.cos(angle) * gx + np.sin(angle) * gy), 0, 1)
    bg1, bg2 = _planes(q["background"]), _planes(q["background_2"])
    canvas = _Canvas([c1 + ramp * (c2 - c1) for c1, c2 in zip(bg1, bg2, strict=True)])

    yaw, pitch = _col(q["yaw"]), _col(q["pitch"])
    head_w, head_h = _col(p["head_width"]), _col(p["head_height"])
    skin, hair = _rgb(p["skin"]), _rgb(p["hair"])
    sides = (-1.0, 1.0)
    inner_x = 0.10 * yaw  # inner features slide sideways under yaw
    inner_y = 0.04 * pitch

    # Neck and clothing.
    neck = np.maximum(np.abs(u) - head_w * 0.42, head_h * 0.5 - v)
    canvas.paint(_smooth(neck, w), skin * 0.8)
    canvas.paint(_smooth(_ellipse(u, v - 1.3, head_w * 2.2, 0.5), w), _rgb(q["clothing"]))

    # Back hair: a rounded mass around the head, reaching down to hair_length.
    vol = _col(p["hair_volume"])
    back = _ellipse(u, v + 0.05 - vol * 0.5, head_w + vol, head_h + vol * 0.5 + 0.02)
    sides_down = np.maximum(np.abs(u) - head_w - vol, v - _col(p["hair_length"]))
    back = np.where(v > 0, sides_down, back)
    canvas.paint(_smooth(back, w) * (vol > 0.0), hair)

    # Ears, then the head whose lower half tapers towards the chin.
    ear_size, ear_y = _col(p["ear_size"]), v - _col(p["ear_height"])
    ears = [
        _ellipse(u - s * head_w * 0.98 + 0.04 * yaw, ear_y, ear_size * 0.55, ear_size)
        for s in sides
    ]
    canvas.paint(_smooth(np.minimum(*ears), w), skin * 0.9)
    taper = 1.0 - _col(p["jaw_taper"]) * np.clip(v / head_h, 0, 1) ** 2
    head = _ellipse(u - 0.03 * yaw, v, head_w * taper, head_h)
    face = _smooth(head, w)
    canvas.paint(face, skin)

    # Skin texture: (warped) stripes, times a crossing wave for spots, thresholded.
    if p["texture_contrast"].any():
        tu, tv = _rotate(u - inner_x, v, _col(p["texture_angle"]))
        freq, phase = _col(p["texture_frequency"]), _col(p["texture_phase"])
        mix = _col(p["texture_mix"])
        field = np.sin(freq * tu + phase + _col(p["texture_warp"]) * np.sin(7 * tv))
        field *= 1 - mix + mix * np.sin(freq * tv + phase)
        field -= _col(p["texture_threshold"])
        alpha = face * np.clip(field * 3, 0, 1) * _col(p["texture_contrast"])
        canvas.paint(alpha, _rgb(p["texture_colour"]))

    # Cheek blush and mole.
    if p["cheek_blush"].any():
        cheeks = [_length(u - inner_x - s * 0.22, v - 0.15 - inner_y) - 0.075 for s in sides]
        canvas.paint(
            _smooth(np.minimum(*cheeks), 4 * w) * _col(p["cheek_blush"]),
            np.array([[0.85, 0.3, 0.35]]),
        )
    if p["mole_size"].any():
        mole = _length(u - inner_x - _col(p["mole_x"]), v - _col(p["mole_y"]))
        canvas.paint(
            face * _smooth(mole - _col(p["mole_size"]), w) * (_col(p["mole_size"]) > 0), skin * 0.35
        )

    # Front hair: the part of the (slightly dilated) head above a sloped hairline.
    hairline = _col(p["hairline"]) + _col(p["hairline_slope"]) * 0.3 * u + 0.6 * u**2
    canvas.paint(_smooth(head - w, w) * _smooth(v - hairline, w), hair)

    # Eyes (liner, sclera, iris, pupil) and brows; the far eye is foreshortened under yaw.
    spacing, eye_y = _col(p["eye_spacing"]), _col(p["eye_height"]) + inner_y
    eye_w, eye_h = _col(p["eye_width"]), _col(p["eye_width"] * p["eye_aspect"])
    open_h, r_iris = eye_h * _col(q["eye_open"]), eye_h * _col(p["iris_size"]) * 1.1
    brow_len, brow_t = _col(p["brow_length"]), _col(p["brow_thickness"])
    brow_y, brow_arch = eye_y - eye_h - _col(p["brow_gap"]), _col(p["brow_arch"])
    eyes, irises, pupils, brows = [], [], [], []
    for s in sides:
        foreshorten = 1.0 - 0.25 * yaw * s
        ex, ey = _rotate(
            u - (s * spacing * foreshorten + inner_x), v - eye_y, s * _col(p["eye_tilt"])
        )
        eye = _ellipse(ex, ey, eye_w * foreshorten, open_h)
        r = _length(ex - _col(q["gaze_x"]) * eye_w, ey)
        eyes.append(eye)
        irises.append(np.maximum(eye, r - r_iris))
        pupils.append(np.maximum(eye, r - 0.45 * r_iris))
        bx, by = _rotate(
            u - (s * (spacing + 0.01) * foreshorten + inner_x), v - brow_y, s * _col(p["brow_tilt"])
        )
        brows.append(_ellipse(bx, by + brow_arch * bx * bx, brow_len, brow_t))
    eye = np.minimum(*eyes)
    canvas.paint(_smooth(eye - 0.012, w), skin * 0.45)
    canvas.paint(_smooth(eye, w), np.array([[0.95, 0.95, 0.92]]))
    canvas.paint(_smooth(np.minimum(*irises), w), _rgb(p["iris"]))
    canvas.paint(_smooth(np.minimum(*pupils), w), np.array([[0.03, 0.03, 0.03]]))
    canvas.paint(_smooth(np.minimum(*brows), w), hair * 0.7)

    # Nose: a shaded bridge and two nostrils, sliding further than the eyes under yaw.
    nose_len, nose_w = _col(p["nose_length"]), _col(p["nose_width"])
    nx = u - 1.5 * inner_x
    tip = eye_y + nose_len + 0.02
    bridge = _ellipse(nx, v - (tip - nose_len * 0.45), nose_w * 0.8, nose_len * 0.55)
    canvas.paint(_smooth(bridge, 3 * w) * _col(p["nose_shade"]), skin * 0.55)
    nostrils = [_length(nx - s * nose_w * 0.55, v - tip) - nose_w * 0.25 for s in sides]
    canvas.paint(_smooth(np.minimum(*nostrils), w), skin * 0.35)

    # Moustache, beard, mouth (lips and the dark opening, bent by the smile).
    mouth_y = _col(p["mouth_height"]) + inner_y + 0.5 * nose_len - 0.09
    mx = u - 1.2 * inner_x
    mouth_w = _col(p["mouth_width"])
    if p["moustache"].any():
        moustache = _ellipse(mx, v - (mouth_y + tip) * 0.5, mouth_w * 1.1, (mouth_y - tip) * 0.4)
        canvas.paint(face * _smooth(moustache, w) * _col(p["moustache"]), hair)
    if p["beard"].any():
        canvas.paint(face * _smooth(mouth_y - 0.03 - v, 3 * w) * _col(p["beard"]), hair)
    my = v - mouth_y + _col(p["smile"]) * mx * mx
    opening = _col(q["mouth_open"]) * 0.04
    lips = _ellipse(mx, my, mouth_w, _col(p["lip_thickness"]) + opening)
    canvas.paint(_smooth(lips, w), _rgb(p["lips"]))
    canvas.paint(
        _smooth(_ellipse(mx, my, mouth_w * 0.9, 0.004 + opening * 0.8), w),
        np.array([[0.2, 0.05, 0.07]]),
    )

    # Glasses: rings around the eyes joined by a bridge; dark lenses for sunglasses.
    glasses = _col(q["glasses"])
    if glasses.any():
        lenses = [_length(u - (s * spacing + inner_x), (v - eye_y) * 1.3) - 0.095 for s in sides]
        lens = np.minimum(*lenses)
        canvas.paint(_smooth(lens, w) * _col(q["sunglasses"]) * 0.9, np.array([[0.05, 0.05, 0.07]]))
        bridge = np.maximum(np.abs(u - inner_x) - 0.1, np.abs(v - eye_y + 0.03) - 0.01)
        frame = np.minimum(np.abs(lens) - 0.012, bridge)
        canvas.paint(_smooth(frame, w) * glasses, _rgb(q["glasses_colour"]))

    # Occluder: a random rotated bar in image coordinates.
    occluder = _col(q["occluder"])
    if occluder.any():
        ox, oy = _rotate(
            gx - _col(q["occluder_x"]), gy - _col(q["occluder_y"]), _col(q["occluder_angle"])
        )
        box = np.maximum(np.abs(ox) - _col(q["occluder_w"]), np.abs(oy) - _col(q["occluder_h"]))
        canvas.paint(_smooth(box, pixel) * occluder, _rgb(q["occluder_colour"]))

    # Photometry: illumination gradient, brightness, white balance, saturation, noise.
    light = _col(q["light_angle"])
    shade = _col(q["brightness"]) * (
        1.0 + _col(q["light_strength"]) * (np.cos(light) * gx + np.sin(light) * gy)
    )
    planes = canvas.planes
    for plane, gain in zip(planes, _planes(q["channel_gain"]), strict=True):
        plane *= shade * gain
    grey = (planes[0] + planes[1] + planes[2]) / 3.0
    saturation, sigma = _col(q["saturation"]), _col(q["noise"]) * 255.0
    out = np.empty((len(grey), res, res, 3), np.uint8)
    for i, plane in enumerate(planes):
        plane = (grey + saturation * (plane - grey)) * 255.0 + 0.5
        plane += noise_rng.standard_normal(plane.shape, dtype=np.float32) * sigma
        out[..., i] = np.clip(plane, 0.0, 255.0)
    return out
