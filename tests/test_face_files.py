"""Verification sets from .bin and pair lists, folder datasets, and the data configs in a run."""

from __future__ import annotations

import io
import json
import logging
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from pocketnet.data.encoded import (
    BytesImages,
    CorruptImageError,
    FileImages,
    PackedBytes,
    decode_rgb,
)
from pocketnet.data.face_rec import rec_dataset
from pocketnet.data.folders import folder_dataset
from pocketnet.data.pairs import read_pairs, stratified_order
from pocketnet.data.sources import bin_verification_set, pairs_verification_set
from pocketnet.data.verification_bin import UnsafeBinError, load_bin, make_bin
from pocketnet.run import run
from pocketnet.runtime import SetupError
from tests.conftest import LFW_DEV, compose_run

FAST = [
    "stage=teacher",
    "backbone=resnet18_narrow",
    "debug=fast",
    "print_config=false",
    "callbacks.progress.rich=false",
]


@pytest.fixture(scope="module")
def both_routes():
    return (
        bin_verification_set(LFW_DEV / "lfw_dev_test.bin"),
        pairs_verification_set(LFW_DEV / "pairsDevTest.txt", LFW_DEV / "test", "lfw_dev_pairs"),
    )


def test_bin_and_pairs_routes_give_identical_pixels_labels_and_folds(both_routes):
    vbin, vpairs = both_routes
    assert len(vbin.issame) == len(vpairs.issame) == 1000
    assert torch.equal(vbin.issame, vpairs.issame) and int(vbin.issame.sum()) == 500
    assert vbin.issame[:50].all() and not vbin.issame[50:100].any()  # fold 1: 50 + 50
    for start in (0, 1000, 1936):
        idx = list(range(start, start + 64))
        a, ia, _ = vbin.dataset.__getitems__(idx)
        b, ib, _ = vpairs.dataset.__getitems__(idx)
        assert torch.equal(a, b) and ia.tolist() == ib.tolist() == idx


def test_verification_set_stays_encoded(both_routes):
    vbin, _ = both_routes
    assert isinstance(vbin.dataset.source, BytesImages)
    held = sum(len(b) for b in vbin.dataset.source.images)
    assert held == 10_663_560  # the .bin's JPEG bytes, not 2000 x 2 flips x 3x112x112 floats
    images, _, _ = vbin.dataset.__getitems__([0, 1])
    assert images.dtype == torch.uint8


def test_make_bin_reproduces_the_shipped_bin_byte_for_byte(tmp_path):
    out = tmp_path / "x.bin"
    assert make_bin(LFW_DEV / "pairsDevTest.txt", LFW_DEV / "test", out) == 1000
    assert out.read_bytes() == (LFW_DEV / "lfw_dev_test.bin").read_bytes()


def test_protocol2_bin_from_python3_loads_and_other_codecs_are_refused(tmp_path):
    path = tmp_path / "p2.bin"
    path.write_bytes(pickle.dumps(([b"\xff\xd8a", b"b"], [True]), protocol=2))
    assert b"_codecs" in path.read_bytes()
    assert load_bin(path).images == [b"\xff\xd8a", b"b"]
    evil = tmp_path / "rot.bin"
    evil.write_bytes(
        b"\x80\x02(]q\x00(c_codecs\nencode\nq\x01X\x01\x00\x00\x00aX\x05\x00\x00\x00rot13"
        b"\x86Rq\x02U\x01be]\x88atq\x03."
    )
    with pytest.raises(UnsafeBinError, match="refused _codecs.encode"):
        load_bin(evil)


def _lfw_names(n: int) -> list[tuple[str, list[int]]]:
    people = []
    for d in sorted((LFW_DEV / "test").iterdir()):
        nums = sorted(int(f.stem.rsplit("_", 1)[1]) for f in d.iterdir())
        if len(nums) >= 2:
            people.append((d.name, nums))
        if len(people) == n:
            return people
    raise AssertionError("not enough people")


def test_view2_pairs_file_keeps_its_folds(tmp_path):
    people = _lfw_names(4)
    lines = ["10\t1"]
    for k in range(10):
        name, nums = people[k % 4]
        other, onums = people[(k + 1) % 4]
        lines += [f"{name}\t{nums[0]}\t{nums[1]}", f"{name}\t{nums[0]}\t{other}\t{onums[0]}"]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    plist = read_pairs(tmp_path / "pairs.txt", LFW_DEV / "test")
    assert plist.format == "lfw-view2" and plist.issame == [True, False] * 10
    name, nums = people[0]
    assert plist.pairs[0][1] == LFW_DEV / "test" / name / f"{name}_{nums[1]:04d}.jpg"


def test_plain_pair_list_is_stratified(tmp_path):
    files = sorted((LFW_DEV / "test").rglob("*.jpg"))[:40]
    rel = [f.relative_to(LFW_DEV / "test") for f in files]
    lines = [f"{rel[i]} {rel[i + 1]} {int(i < 20)}" for i in range(0, 40, 2)] * 2
    (tmp_path / "mine.txt").write_text("\n".join(lines))
    plist = read_pairs(tmp_path / "mine.txt", LFW_DEV / "test")
    assert plist.format == "plain" and len(plist.issame) == 40
    assert plist.issame[:4] == [True, True, False, False]  # fold 1 = 2 matched + 2 mismatched
    assert stratified_order([True, True, False, False], folds=2).tolist() == [0, 2, 1, 3]


def test_missing_image_in_pairs_names_file_and_line(tmp_path, caplog):
    text = (LFW_DEV / "pairsDevTest.txt").read_text().splitlines()
    text[3] = "Nobody_Here\t1\t2"
    (tmp_path / "p.txt").write_text("\n".join(text))
    with pytest.raises(FileNotFoundError, match=r"p\.txt:4: image .*Nobody_Here_0001\.jpg"):
        read_pairs(tmp_path / "p.txt", LFW_DEV / "test")
    with caplog.at_level(logging.WARNING):
        plist = read_pairs(tmp_path / "p.txt", LFW_DEV / "test", skip_missing=True)
    assert len(plist.issame) == 999 and plist.skipped == 1
    assert "skipped 1 pairs naming missing images" in caplog.text


def test_malformed_pairs_line(tmp_path):
    (tmp_path / "p.txt").write_text("a.jpg b.jpg maybe\n")
    with pytest.raises(ValueError, match=r"p\.txt:1: expected 'path1 path2 0\|1'"):
        read_pairs(tmp_path / "p.txt", tmp_path)


def test_folder_dataset_labels_sizes_and_empty_folders(tmp_path, caplog):
    people = [p for p in sorted((LFW_DEV / "test").iterdir())[:3]]
    for p in people:
        shutil.copytree(p, tmp_path / p.name)
    small = tmp_path / people[2].name / "small.png"
    Image.new("RGB", (56, 40), (200, 10, 10)).save(small)
    dataset, num_classes = folder_dataset(tmp_path)
    counts = [len(list((tmp_path / p.name).iterdir())) for p in people]
    assert num_classes == 3 and len(dataset) == sum(counts)
    images, labels, _ = dataset.__getitems__(list(range(len(dataset))))
    assert images.shape[1:] == (3, 112, 112)  # the PNG brought to the first image's size
    assert labels.tolist() == [i for i, c in enumerate(counts) for _ in range(c)]
    red = images[len(dataset) - 1]
    assert red[0].float().mean() > 190 and red[1].float().mean() < 20
    (tmp_path / "Zz_Empty").mkdir()
    with pytest.raises(ValueError, match="Zz_Empty: identity folder has no images"):
        folder_dataset(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert folder_dataset(tmp_path, skip_corrupt=True)[1] == 3
    assert "skipped 1 identity folders" in caplog.text


# ----------------------------------------------------------------------------- runs


def test_lfw_dev_run_validates_on_both_routes_with_equal_accuracy(tmp_path):
    cfg = compose_run(tmp_path, [*FAST, "data=lfw_dev", "trainer.max_epochs=1"])
    run(cfg)
    m = json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]
    for metric in ("acc", "acc_std", "threshold", "auc"):
        assert m[f"val/lfw_dev_test/{metric}"] == m[f"val/lfw_dev_pairs/{metric}"], metric


def test_folder_run_on_identity_folders(tmp_path):
    root = tmp_path / "faces"
    for p in sorted((LFW_DEV / "test").iterdir())[:12]:
        shutil.copytree(p, root / p.name)
    overrides = [
        *FAST,
        "data=folder",
        f"data.root={root}",
        f"data.val_pairs=[{{pairs: {LFW_DEV / 'pairsDevTest.txt'}, images: {LFW_DEV / 'test'}}}]",
        "trainer.max_epochs=1",
    ]
    cfg = compose_run(tmp_path, overrides)
    result = run(cfg)
    assert list(result.sets) == ["pairsDevTest"]  # validated on the pair list
    assert result.metrics["val/pairsDevTest/acc"] == result.sets["pairsDevTest"]["acc"]


@pytest.mark.parametrize(
    "override,message",
    [
        ("data.root=/nonexistent/pack", r"/nonexistent/pack: no such folder"),
        (
            "data.val_bins=[lfw]",
            r"lfw\.bin does not exist; \.bin files in .*\['lfw_dev_test\.bin'\]",
        ),
    ],
)
def test_bad_data_paths_stop_before_training(tmp_path, override, message):
    cfg = compose_run(tmp_path, [*FAST, "data=lfw_dev", override])
    with pytest.raises(SetupError, match=message):
        run(cfg)


def test_jpegs_decode_to_torchvisions_pixels_and_damage_is_an_error():
    source = rec_dataset(LFW_DEV)[0].source
    for i in range(0, len(source), 7):  # 954 of the pack's real JPEGs
        data = bytes(source.read(i)[0])
        want = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB)
        assert torch.equal(decode_rgb(data), want), source.where(i)
    # damage libjpeg only warns about (torchvision decodes it), then a truncated JPEG
    data = bytes(source.read(0)[0])
    damaged = data[:-2] + bytes(64) + data[-2:]
    decode_jpeg(torch.frombuffer(bytearray(damaged), dtype=torch.uint8))  # accepted there
    with pytest.raises(CorruptImageError, match=r"rec 7: corrupt JPEG .*extraneous bytes"):
        decode_rgb(damaged, "rec 7")
    with pytest.raises(CorruptImageError, match=r"rec: corrupt JPEG \(2000 bytes\)"):
        decode_rgb(data[:2000], "rec")
    # 200 random 3-byte corruptions of one record: every one libjpeg warns about is refused
    rng = np.random.default_rng(0)
    refused = 0
    for _ in range(200):
        bad = bytearray(data)
        for at in rng.integers(len(bad) // 3, len(bad) - 2, 3):
            bad[at] = int(rng.integers(256))
        try:
            decode_rgb(bytes(bad))
        except CorruptImageError:
            refused += 1
    assert refused >= 100


def test_cmyk_jpegs_decode_through_torchvision():
    buf = io.BytesIO()
    Image.new("CMYK", (6, 4), (0, 255, 255, 0)).save(buf, "JPEG", quality=95)
    image = decode_rgb(buf.getvalue())  # red, in CMYK
    assert image.shape == (3, 4, 6)
    assert image[0].float().mean() > 200 and image[1:].float().mean() < 40


def test_16_bit_png_and_animated_gif_decode_to_8_bit_rgb():
    grey16 = np.full((4, 6), 28000, dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(grey16).save(buf, "PNG")
    image = decode_rgb(buf.getvalue())
    assert image.dtype == torch.uint8 and image.shape == (3, 4, 6)
    assert int(image.max()) == 28000 >> 8
    frames = [Image.new("RGB", (5, 5), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    gif = decode_rgb(buf.getvalue())
    assert gif.shape == (3, 5, 5) and int(gif[0].float().mean()) > 200


def test_packed_bytes_give_back_every_item_from_one_buffer():
    items = [b"\xff\xd8abc", b"", b"x" * 1000, "é/ü.jpg".encode()]
    packed = PackedBytes(items)
    assert len(packed) == 4 and [bytes(packed[i]) for i in range(4)] == items
    assert packed.buffer.nbytes == sum(map(len, items))  # one buffer, no per-item objects
    files = FileImages(["/a/é.jpg", "/b/c.png"], [3, 4])
    assert files.where(0) == "/a/é.jpg" and files.labels.tolist() == [3, 4]
