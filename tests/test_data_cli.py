"""``pocketnet-data``: every sub-command on real files, and its errors."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys

import pytest

from pocketnet.data.cli import main
from tests.conftest import LFW_DEV


def test_info_on_a_pack_a_bin_and_a_pairs_file(capsys):
    assert main(["info", str(LFW_DEV)]) == 0
    out = capsys.readouterr().out
    assert "classic layout: 6,671 images, 1,184 identities, property size 112x112" in out
    assert "images per identity: min 2" in out and "112x112 (64)" in out
    assert main(["info", str(LFW_DEV / "lfw_dev_test.bin")]) == 0
    assert "1,000 pairs (500 matched), 2,000 images" in capsys.readouterr().out
    assert main(["info", str(LFW_DEV / "pairsDevTest.txt"), "--images", str(LFW_DEV / "test")]) == 0
    out = capsys.readouterr().out
    assert "lfw-view1 pairs file, 1,000 pairs (500 matched, 500 mismatched), 1,549 distinct" in out


def test_pack_unpack_verify_and_make_bin(tmp_path, capsys):
    people = sorted((LFW_DEV / "test").iterdir())[:5]
    for p in people:
        shutil.copytree(p, tmp_path / "faces" / p.name)
    n = sum(len(list(p.iterdir())) for p in people)
    assert main(["pack", str(tmp_path / "faces"), str(tmp_path / "pack")]) == 0
    assert f"packed {n:,} images" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "pack")]) == 0
    assert f"OK: {n + 5 + 1:,} records read" in capsys.readouterr().out
    assert main(["unpack", str(tmp_path / "pack"), str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").rglob("*.jpg"))) == n
    out_bin = tmp_path / "dev.bin"
    args = ["make-bin", "--pairs", str(LFW_DEV / "pairsDevTest.txt")]
    assert main([*args, "--images", str(LFW_DEV / "test"), "--out", str(out_bin)]) == 0
    assert out_bin.read_bytes() == (LFW_DEV / "lfw_dev_test.bin").read_bytes()


def test_verify_reports_the_first_bad_record(tmp_path, capsys):
    shutil.copytree(LFW_DEV / "test" / "Abdullah_Gul", tmp_path / "faces" / "a")
    shutil.copytree(LFW_DEV / "test" / "Albert_Costa", tmp_path / "faces" / "b")
    victim = sorted((tmp_path / "faces" / "b").iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:300])
    main(["pack", str(tmp_path / "faces"), str(tmp_path / "pack")])
    capsys.readouterr()
    key = len(list((tmp_path / "faces" / "a").iterdir())) + 2
    assert main(["verify", str(tmp_path / "pack")]) == 1
    err = capsys.readouterr().err
    assert (
        f"pocketnet-data verify: error: {tmp_path / 'pack' / 'train.rec'}: key {key} at byte" in err
    )
    assert "corrupt JPEG" in err


def test_unsafe_bin_and_missing_paths_are_reported(tmp_path, capsys):
    evil = tmp_path / "evil.bin"
    evil.write_bytes(pickle.dumps(([b"a", b"b"], [print])))
    assert main(["info", str(evil)]) == 1
    assert "unsafe: " in capsys.readouterr().err
    assert main(["info", str(tmp_path / "nothing")]) == 1
    assert "no such pack folder, .bin or pairs file" in capsys.readouterr().err
    assert main(["verify", str(tmp_path)]) == 1
    assert "train.rec: missing" in capsys.readouterr().err


def test_console_script_is_installed():
    script = shutil.which("pocketnet-data") or f"{sys.prefix}/bin/pocketnet-data"
    out = subprocess.run([script, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("pack", "unpack", "info", "make-bin", "verify"):
        assert command in out
    with pytest.raises(SystemExit) as exit_:
        main(["pack"])  # argparse: missing arguments
    assert exit_.value.code == 2
