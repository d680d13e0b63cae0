"""RecordIO read/write: the shipped mxnet-written pack, round trips, split records, bad files."""

from __future__ import annotations

import logging
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pocketnet.data.encoded import CorruptImageError, decode_rgb
from pocketnet.data.face_rec import (
    open_rec,
    pack_folder,
    read_layout,
    rec_dataset,
    unpack_rec,
    verify_rec,
)
from pocketnet.data.recordio import (
    MAGIC,
    IRHeader,
    RecordIOError,
    RecordReader,
    RecordWriter,
    pack_record,
    read_index,
    unpack_record,
)
from pocketnet.data.sampling import EpochShuffle
from tests.conftest import LFW_DEV

MAGIC_BYTES = struct.pack("<I", MAGIC)


def _chunk(cflag: int, data: bytes) -> bytes:
    return struct.pack("<II", MAGIC, (cflag << 29) | len(data)) + data


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """Identity folders of real LFW JPEGs (plus one PNG and one BMP, re-encoded from JPEGs)."""
    root = tmp_path_factory.mktemp("faces")
    people = sorted(p for p in (LFW_DEV / "test").iterdir() if len(list(p.iterdir())) >= 3)[:4]
    for person in people:
        shutil.copytree(person, root / person.name)
    first = sorted((root / people[0].name).iterdir())[0]
    Image.open(first).save(root / people[0].name / "zz_extra.png")
    Image.open(first).save(root / people[1].name / "zz_extra.bmp")
    return root


def _folder_files(root: Path) -> list[list[bytes]]:
    return [[f.read_bytes() for f in sorted(d.iterdir())] for d in sorted(root.iterdir())]


# ----------------------------------------------------------------------------- shipped pack


def test_shipped_pack_layout_and_labels():
    source, layout = open_rec(LFW_DEV)
    reader = source.reader
    assert layout.kind == "classic"
    assert (len(layout.image_keys), layout.num_classes) == (6671, 1184)
    assert layout.image_size == (112, 112)
    assert len(reader) == 6671 + 1184 + 1
    starts, ends = layout.ranges[:, 0], layout.ranges[:, 1]
    assert starts[0] == 1 and ends[-1] == 6672 and (starts[1:] == ends[:-1]).all()
    assert (ends - starts).min() == 2  # identities with at least 2 images
    for label in (0, 1, 500, 1183):
        start, end = layout.ranges[label].tolist()
        for key in range(start, end):
            header, image = unpack_record(reader.read(key))
            assert header.label == label and header.id == key
            assert image[:2] == b"\xff\xd8"


def test_shipped_pack_dataset_decodes_every_label_consistently():
    dataset, num_classes = rec_dataset(LFW_DEV)
    assert num_classes == 1184 and len(dataset) == 6671
    images, labels, _ = dataset.__getitems__(list(range(0, 6671, 97)))
    assert images.dtype == torch.uint8 and images.shape == (69, 3, 112, 112)
    _, layout = open_rec(LFW_DEV)
    keys = layout.image_keys[0:6671:97]
    expected = np.searchsorted(layout.ranges[:, 0], keys, side="right") - 1
    assert labels.tolist() == expected.tolist()


def test_unpack_then_pack_gives_the_shipped_files_byte_for_byte(tmp_path):
    assert unpack_rec(LFW_DEV, tmp_path / "folders", progress=False) == 6671
    assert len(list((tmp_path / "folders").iterdir())) == 1184
    summary = pack_folder(tmp_path / "folders", tmp_path / "pack", progress=False)
    assert (summary.images, summary.identities, summary.image_size) == (6671, 1184, (112, 112))
    for name in ("train.rec", "train.idx", "property"):
        assert (tmp_path / "pack" / name).read_bytes() == (LFW_DEV / name).read_bytes(), name


# ----------------------------------------------------------------------------- round trips


def test_pack_then_read_gives_the_same_bytes_and_labels(faces, tmp_path):
    summary = pack_folder(faces, tmp_path, progress=False)
    expected = _folder_files(faces)
    assert summary.identities == 4 and summary.images == sum(map(len, expected))
    assert (tmp_path / "property").read_text() == "4,112,112\n"
    dataset, num_classes = rec_dataset(tmp_path)
    got: list[list[bytes]] = [[] for _ in range(num_classes)]
    for i in range(len(dataset)):
        data, label = dataset.source.read(i)
        got[label].append(data)
    assert got == expected
    images, labels, _ = dataset.__getitems__(list(range(len(dataset))))
    assert images.shape[1:] == (3, 112, 112)
    assert labels.tolist() == [lab for lab, files in enumerate(expected) for _ in files]


def test_pack_refuses_a_text_file_named_jpg_and_decode_names_the_file(faces, tmp_path):
    folders = tmp_path / "faces"
    shutil.copytree(faces, folders)
    fake = next(folders.iterdir()) / "zzz_notes.jpg"
    fake.write_text("not a face")
    with pytest.raises(ValueError, match=r"zzz_notes.jpg: not an image \(first bytes b'not a fa"):
        pack_folder(folders, tmp_path / "pack", progress=False)
    with pytest.raises(CorruptImageError, match=r"^notes.jpg: .*not an image format") as err:
        decode_rgb(b"not a face", "notes.jpg")
    assert "BytesIO" not in str(err.value)


def test_pack_then_unpack_gives_the_same_files(faces, tmp_path):
    pack_folder(faces, tmp_path / "pack", progress=False)
    unpack_rec(tmp_path / "pack", tmp_path / "out", progress=False)
    assert _folder_files(tmp_path / "out") == _folder_files(faces)
    exts = sorted({f.suffix for f in (tmp_path / "out").rglob("*.*")})
    assert exts == [".bmp", ".jpg", ".png"]


@pytest.mark.parametrize(
    "payload,cuts",
    [
        (b"abcd" + MAGIC_BYTES + b"efghij", [4]),  # one aligned magic: parts 1 + 3
        (MAGIC_BYTES + b"xy", [0]),  # magic at the start: an empty first part
        (b"abcd" + MAGIC_BYTES + MAGIC_BYTES + b"zz" + MAGIC_BYTES, [4, 8]),  # 14: unaligned
        (b"ab" + MAGIC_BYTES + b"cd", []),  # unaligned: not split
    ],
)
def test_split_records_match_mxnet_and_read_back(tmp_path, payload, cuts):
    with RecordWriter(tmp_path / "x.rec") as w:
        w.write(7, payload)
        w.write(8, b"tail")
    expected, start = b"", 0
    for n, cut in enumerate(cuts):
        expected += _chunk(1 if n == 0 else 2, payload[start:cut])
        start = cut + 4
    expected += _chunk(3 if cuts else 0, payload[start:]) + b"\0" * (-len(payload) % 4)
    raw = (tmp_path / "x.rec").read_bytes()
    assert raw[: len(expected)] == expected
    assert w.split_records == (1 if cuts else 0)
    reader = RecordReader(tmp_path / "x.rec")
    assert reader.read(7) == payload and reader.read(8) == b"tail"


def test_split_image_record_survives_pack_and_read(tmp_path):
    # a "PNG" whose bytes hold the magic word at an aligned offset of the payload (24-byte header)
    face = LFW_DEV / "test" / "Abdullah_Gul" / "Abdullah_Gul_0013.jpg"
    data = bytearray(face.read_bytes())
    data[4:8] = MAGIC_BYTES  # payload offset 24 + 4: aligned
    (tmp_path / "in" / "a").mkdir(parents=True)
    (tmp_path / "in" / "a" / "1.jpg").write_bytes(face.read_bytes())
    (tmp_path / "in" / "a" / "2.jpg").write_bytes(bytes(data))
    summary = pack_folder(tmp_path / "in", tmp_path / "pack", progress=False)
    assert summary.split_records == 1
    reader = RecordReader(tmp_path / "pack" / "train.rec")
    header, image = unpack_record(reader.read(2))
    assert image == bytes(data) and header.label == 0


def test_label_arrays_and_the_flat_layout(tmp_path):
    face = (LFW_DEV / "test" / "Abdullah_Gul" / "Abdullah_Gul_0013.jpg").read_bytes()
    with RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as w:
        for key in range(6):  # flat: every key an image, labels as arrays [label, extra]
            w.write(key, pack_record(IRHeader(0, 0.0, key, 0, (float(key % 3), 9.0)), face))
    (tmp_path / "property").write_text("3,112,112\n")
    reader = RecordReader(tmp_path / "train.rec")
    header, _ = unpack_record(reader.read(4))
    assert header.flag == 2 and header.labels == (1.0, 9.0) and header.first_label == 1.0
    layout = read_layout(reader, tmp_path / "property")
    assert layout.kind == "flat" and layout.image_keys.tolist() == list(range(6))
    dataset, num_classes = rec_dataset(tmp_path)
    assert num_classes == 3
    assert dataset.__getitems__([0, 1, 2, 3, 4, 5])[1].tolist() == [0, 1, 2, 0, 1, 2]


# ----------------------------------------------------------------------------- workers, DDP


def test_dataloader_workers_and_ddp_shards_read_everything_once(faces, tmp_path):
    pack_folder(faces, tmp_path, progress=False)
    dataset, _ = rec_dataset(tmp_path)
    dataset.source.reader.read(0)  # a handle opened before the fork must not be shared
    want = dataset.__getitems__(list(range(len(dataset))))[1]
    loader = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=lambda b: b)
    got = torch.cat([labels for _, labels, _ in loader])
    assert got.tolist() == want.tolist()
    shards = []
    for rank in range(2):  # pocketnet's DDP sampler, read through loader workers
        sampler = EpochShuffle(dataset, 1, lambda: 0, lambda epoch: 0, rank=rank, world=2)
        shard = list(sampler)
        loader = DataLoader(
            dataset, batch_size=3, sampler=sampler, num_workers=2, collate_fn=lambda b: b
        )
        got = torch.cat([labels for _, labels, _ in loader])
        assert got.tolist() == want[shard].tolist()
        shards.append(shard)
    assert len(shards[0]) == len(shards[1]) == -(-len(dataset) // 2)  # padded to equal shares
    assert set(shards[0]) | set(shards[1]) == set(range(len(dataset)))


# ----------------------------------------------------------------------------- bad input


@pytest.fixture
def small_pack(faces, tmp_path) -> Path:
    pack_folder(faces, tmp_path / "pack", progress=False)
    return tmp_path / "pack"


def _offset(pack: Path, key: int) -> int:
    keys, offsets = read_index(pack / "train.idx")
    return int(offsets[np.searchsorted(keys, key)])


def test_truncated_rec_names_key_and_offset(small_pack):
    rec = small_pack / "train.rec"
    cut = _offset(small_pack, 3) + 100
    rec.write_bytes(rec.read_bytes()[:cut])
    with pytest.raises(RecordIOError, match=r"offsets point past the end.*first key \d+"):
        open_rec(small_pack)
    reader = RecordReader(rec)
    with pytest.raises(RecordIOError, match=rf"key 3: truncated at byte offset \d+.*ends at {cut}"):
        reader.read(3)


def test_bad_magic_names_key_and_offset(small_pack):
    rec = small_pack / "train.rec"
    raw = bytearray(rec.read_bytes())
    offset = _offset(small_pack, 5)
    raw[offset] ^= 0xFF
    rec.write_bytes(bytes(raw))
    dataset, _ = rec_dataset(small_pack)
    with pytest.raises(
        RecordIOError, match=rf"key 5: bad magic 0x[0-9a-f]+ at byte offset {offset}"
    ):
        dataset.__getitems__([3, 4, 5])


def test_index_offset_past_the_end(small_pack):
    idx = small_pack / "train.idx"
    lines = idx.read_text().splitlines()
    lines[2] = "3\t999999999"
    idx.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        RecordIOError, match=r"train\.idx: 1 offsets point past.*key 3 at byte offset 999999999"
    ):
        open_rec(small_pack)


def test_malformed_index_line(small_pack):
    idx = small_pack / "train.idx"
    idx.write_text(idx.read_text().replace("4\t", "4 x", 1))
    with pytest.raises(RecordIOError, match=r"train\.idx:4: expected '<key>\\t<byte offset>'"):
        open_rec(small_pack)


DAMAGE = {
    "cut short": lambda data: data[:200],
    # libjpeg warns (extraneous bytes before the end marker) and torchvision decodes it
    "bytes inserted": lambda data: data[:-2] + bytes(64) + data[-2:],
}


def _corrupt_jpeg_pack(faces: Path, tmp_path: Path, damage: str = "cut short") -> Path:
    folder = tmp_path / "in"
    shutil.copytree(faces, folder)
    victim = sorted(sorted(folder.iterdir())[1].iterdir())[0]
    victim.write_bytes(DAMAGE[damage](victim.read_bytes()))
    pack_folder(folder, tmp_path / "pack", progress=False)
    return tmp_path / "pack"


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_corrupt_jpeg_is_an_error_naming_key_and_offset(faces, tmp_path, damage):
    pack = _corrupt_jpeg_pack(faces, tmp_path, damage)
    dataset, _ = rec_dataset(pack)
    n_first = len(list(sorted(faces.iterdir())[0].iterdir()))
    key = n_first + 1
    offset = _offset(pack, key)
    with pytest.raises(
        CorruptImageError, match=rf"key {key} at byte offset {offset}: corrupt JPEG"
    ):
        dataset.__getitems__(list(range(len(dataset))))
    with pytest.raises(CorruptImageError, match=rf"key {key} at byte offset {offset}"):
        verify_rec(pack, progress=False)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_corrupt_jpeg_skipped_and_counted_with_skip_corrupt(faces, tmp_path, caplog, damage):
    pack = _corrupt_jpeg_pack(faces, tmp_path, damage)
    dataset, _ = rec_dataset(pack, skip_corrupt=True)
    with caplog.at_level(logging.WARNING):
        images, labels, _ = dataset.__getitems__(list(range(len(dataset))))
    assert len(images) == len(dataset) - 1 and dataset.skipped == 1
    assert "skipped corrupt sample (1 so far" in caplog.text
    assert labels.bincount().tolist()[1] == len(list(sorted(faces.iterdir())[1].iterdir())) - 1


def test_label_disagreeing_with_identity_records_is_an_error(tmp_path):
    face = (LFW_DEV / "test" / "Abdullah_Gul" / "Abdullah_Gul_0013.jpg").read_bytes()
    with RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as w:
        w.write(1, pack_record(IRHeader(0, 0.0, 1, 0), face))
        w.write(2, pack_record(IRHeader(0, 0.0, 2, 0), face))  # says 0, ranges say 1
        w.write(3, pack_record(IRHeader(2, 0.0, 0, 0, (1.0, 2.0))))
        w.write(4, pack_record(IRHeader(2, 0.0, 0, 0, (2.0, 3.0))))
        w.write(0, pack_record(IRHeader(2, 0.0, 0, 0, (3.0, 5.0))))
    dataset, num_classes = rec_dataset(tmp_path)
    assert num_classes == 2
    with pytest.raises(
        RecordIOError, match=r"key 2 .*label 0 disagrees.*identity 0 owns keys \[1, 2\)"
    ):
        dataset.__getitems__([0, 1])


def test_empty_identity_folder(faces, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(faces, folder)
    (folder / "Empty_Person").mkdir()
    with pytest.raises(ValueError, match=r"Empty_Person: identity folder has no images"):
        pack_folder(folder, tmp_path / "pack", progress=False)
    summary = pack_folder(folder, tmp_path / "pack", skip_empty=True, progress=False)
    assert summary.identities == 4 and summary.skipped_folders == ["Empty_Person"]


@pytest.mark.parametrize(
    "text,line",
    [("1\t2\t3\t4\n\n", 1), ("1\t2\t3\n4\n", 1), ("1\t0\n2 16\n", 2)],
)
def test_index_lines_must_each_hold_one_key_and_one_offset(tmp_path, text, line):
    (tmp_path / "x.idx").write_text(text)
    with pytest.raises(RecordIOError, match=rf"x\.idx:{line}: expected"):
        read_index(tmp_path / "x.idx")


def test_non_finite_label_is_a_record_error(tmp_path):
    face = (LFW_DEV / "test" / "Abdullah_Gul" / "Abdullah_Gul_0013.jpg").read_bytes()
    with RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as w:
        w.write(0, pack_record(IRHeader(0, 0.0, 0, 0), face))
        w.write(1, pack_record(IRHeader(0, float("nan"), 1, 0), face))
    (tmp_path / "property").write_text("2,112,112\n")
    dataset, _ = rec_dataset(tmp_path, skip_corrupt=True)
    images, labels, _ = dataset.__getitems__([0, 1])
    assert labels.tolist() == [0] and dataset.skipped == 1


@pytest.mark.parametrize("workers", [0, 1])
def test_a_corrupt_record_found_mid_training_is_one_line_and_loses_nothing(
    faces, tmp_path, capsys, workers
):
    from pocketnet.run import run
    from tests.conftest import compose_run

    pack = _corrupt_jpeg_pack(faces, tmp_path, "bytes inserted")
    overrides = ["debug=fast", "stage=teacher", "backbone=resnet18_tiny", "print_config=false"]
    overrides += [
        "data=rec",
        f"data.root={pack}",
        f"data.val_bins=[{LFW_DEV / 'lfw_dev_test.bin'}]",
        "data.batch_size=4",
    ]
    overrides += [f"data.num_workers={workers}", "callbacks.progress.rich=false"]
    cfg = compose_run(tmp_path, overrides)
    with pytest.raises(SystemExit) as stop:
        run(cfg)
    assert stop.value.code == 1
    n_first = len(list(sorted(faces.iterdir())[0].iterdir()))
    key = n_first + 1
    saved = Path(cfg.paths.output_dir) / "checkpoints" / "interrupted.ckpt"
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: {pack / 'train.rec'}: key {key} at byte offset")
    assert "corrupt JPEG" in line and "Traceback" not in line
    assert line.endswith(f"data.skip_corrupt=true, and resume with ckpt_path={saved}")
    assert torch.load(saved, weights_only=True)["state_dict"]
