"""Sessions: tests (default), lint, quickstart, slow, bench.

tests, quickstart, slow and bench share one environment, ``.nox/pocketnet`` (torch and its CUDA
libraries: 6.6 GB, a few minutes to install once): the first of them makes it, the others reuse
it and reinstall only when pyproject.toml changes. lint has its own (ruff only).
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_venv = "yes"

ENV = Path(__file__).resolve().parent / ".nox" / "pocketnet"
STAMP = ENV / "pocketnet-installed"  # the pyproject.toml digest the environment was built from


def _install(session: nox.Session) -> None:
    """Make or update the shared environment."""
    python = ENV / "bin" / "python"
    if not python.exists():
        session.run(sys.executable, "-m", "venv", str(ENV), external=True)
    digest = hashlib.sha256(Path("pyproject.toml").read_bytes()).hexdigest()
    if not STAMP.is_file() or STAMP.read_text() != digest:
        # torch and torchvision come from PyPI together (see DEVELOPERS.md)
        session.run(str(python), "-m", "pip", "install", "-e", ".[dev]", external=True)
        STAMP.write_text(digest)


def _bin(name: str) -> str:
    """A program of the shared environment."""
    return str(ENV / "bin" / name)


def shared(func: Callable[[nox.Session], None]) -> Callable[[nox.Session], None]:
    """A session that runs in the shared environment (nox makes none of its own)."""

    @functools.wraps(func)
    def session(session: nox.Session) -> None:
        _install(session)
        # the jobs' own subprocesses (tests that run the commands) find its programs too
        session.env["VIRTUAL_ENV"] = str(ENV)
        session.env["PATH"] = f"{ENV / 'bin'}{os.pathsep}{os.environ['PATH']}"
        func(session)

    return nox.session(venv_backend="none")(session)


@shared
def tests(session: nox.Session) -> None:
    """The default suite (< 10 minutes on 2 CPU cores): one worker a core, each test file on
    one worker (its module fixtures made once)."""
    cores = min(len(os.sched_getaffinity(0)), 8)  # the cores this job may use; each worker ~2 GB
    workers = ["-n", str(cores), "--dist", "loadfile"]
    session.run(_bin("pytest"), "-q", *workers, *session.posargs, success_codes=[0, 5])


@shared
def slow(session: nox.Session) -> None:
    """Long end-to-end checks: the quickstart pipeline and the search preset (accuracy, time)."""
    session.run(_bin("pytest"), "-q", "-m", "slow", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")


@shared
def quickstart(session: nox.Session) -> None:
    """The main job: teacher, KD student and plain student on the synthetic faces; one table."""
    session.run(_bin("pocketnet"), "experiment=quickstart", *session.posargs)


@shared
def bench(session: nox.Session) -> None:
    """Speed targets, printed as ratios measured side by side."""
    session.run(_bin("python"), "benchmarks/bench_teacher_step.py", *session.posargs)
    session.run(_bin("python"), "benchmarks/bench_student_step.py")
    session.run(_bin("python"), "benchmarks/bench_verification.py")
    session.run(_bin("python"), "benchmarks/bench_data.py")
    session.run(_bin("python"), "benchmarks/bench_backbones.py")
    session.run(_bin("python"), "benchmarks/bench_search_step.py")
    session.run(_bin("python"), "benchmarks/bench_onnx.py")
    session.run(_bin("python"), "benchmarks/bench_cli.py")
    session.run(_bin("python"), "benchmarks/bench_partial_fc.py")
    session.run(_bin("python"), "benchmarks/bench_speed_options.py")
    session.run(_bin("python"), "benchmarks/bench_small_nets.py")
    session.run(_bin("python"), "benchmarks/bench_int8_recipes.py")
