"""The commands answer ``--help`` and shell completion without importing torch, timm or
Lightning (seconds each), and the face nets still register with timm on their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HEAVY = ("torch", "timm", "lightning", "torchvision", "onnx")


def _run(code: str, **env: str) -> dict:
    """``code`` in a fresh interpreter; the JSON it prints last."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _command(entry: str, args: list[str], **env: str) -> dict:
    """``entry`` (``module:function``) run with ``args``: its stdout, exit code and the heavy
    modules it imported."""
    module, function = entry.split(":")
    return _run(
        f"""
        import contextlib, io, json, sys
        sys.argv = ["cmd", *{args!r}]
        out = io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out):
            try:
                import {module}
                {module}.{function}()
            except SystemExit as stop:
                code = stop.code or 0
        heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
        print(json.dumps({{"out": out.getvalue(), "code": code, "heavy": heavy}}))
        """,
        **env,
    )


def test_help_composes_the_same_config_without_torch(monkeypatch, capsys):
    args = ["stage=student", "kd=multi_step", "--help"]
    fast = _command("pocketnet.cli:main", args)
    assert fast["code"] == 0 and fast["heavy"] == []
    # the same text as in a process where the KD methods' typed schemas are loaded
    from pocketnet import cli

    monkeypatch.setattr(sys, "argv", ["pocketnet", *args])
    with pytest.raises(SystemExit):
        cli.main()
    assert fast["out"] == capsys.readouterr().out
    assert "schedule:" in fast["out"] and "kd                         adadistill," in fast["out"]


@pytest.mark.parametrize(
    ("line", "completion"),
    [("pocketnet kd=emb", "kd=embedding"), ("pocketnet kd=embedding kd.wei", "kd.weight=")],
)
def test_shell_completion_without_torch(line, completion):
    done = _command("pocketnet.cli:main", ["-sc", "query=bash"], COMP_LINE=line)
    assert done["out"].split() == [completion] and done["heavy"] == []


def test_help_of_a_mistyped_option_is_one_error_line():
    done = subprocess.run(
        [sys.executable, "-m", "pocketnet", "stage=teachr", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: In 'config': Could not find 'stage/teachr'")


@pytest.mark.parametrize(
    ("entry", "args", "expect"),
    [
        ("pocketnet.cli:eval_main", ["--help"], "conf/eval.yaml"),
        ("pocketnet.cli:export_main", ["--help"], "conf/export.yaml"),
        ("pocketnet.cli:main", ["--version"], "pocketnet 0.1.0 (hydra-core"),
        ("pocketnet.data.cli:main", ["--help"], "make-templates"),
    ],
)
def test_other_commands_answer_without_torch(entry, args, expect):
    done = _command(entry, args)
    assert expect in done["out"] and done["heavy"] == []


@pytest.mark.parametrize("first,then", [("pocketnet", "timm"), ("timm", "pocketnet")])
def test_the_face_nets_register_with_timm_in_either_order(first, then):
    """pocketnet first: an availability check of timm (``find_spec``) before timm's import
    must not use up the hook-up that registers the nets."""
    done = _run(
        f"""
        import importlib.util, json
        import {first}
        assert importlib.util.find_spec("timm") is not None
        import {then}
        import timm
        name = type(timm.create_model("mobilefacenet")).__name__
        pkg = timm.__spec__.loader.is_package("timm")
        print(json.dumps({{"name": name, "pkg": pkg, "listed": timm.list_models("pocketnet_s*")}}))
        """
    )
    listed = ["pocketnet_s_128", "pocketnet_s_256"]
    assert done == {"name": "MobileFaceNet", "pkg": True, "listed": listed}


def test_the_console_scripts_are_installed():
    """The programs a user types (the other tests call their functions)."""
    for program, expect in (
        ("pocketnet", "conf/config.yaml"),
        ("pocketnet-eval", "conf/eval.yaml"),
        ("pocketnet-export", "conf/export.yaml"),
        ("pocketnet-report", "usage: pocketnet-report"),
        ("pocketnet-data", "usage: pocketnet-data"),
    ):
        done = subprocess.run(
            [str(Path(sys.executable).parent / program), "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0 and expect in done.stdout, program


def test_importing_pocketnet_loads_neither_torch_nor_timm():
    done = _run(
        f"""
        import json, sys
        import pocketnet
        print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
        """
    )
    assert done == []
