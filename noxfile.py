"""Sessions: tests (default), lint, quickstart, slow, bench. Each installs the package itself."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_venv = "yes"


def _install(session: nox.Session) -> None:
    # torch and torchvision come from PyPI together (see DEVELOPERS.md).
    session.install("-e", ".[dev]")


@nox.session
def tests(session: nox.Session) -> None:
    """The default suite (< 10 minutes on 2 CPU cores)."""
    _install(session)
    session.run("pytest", "-q", *session.posargs, success_codes=[0, 5])


@nox.session
def slow(session: nox.Session) -> None:
    """Long end-to-end checks: the quickstart pipeline and the search preset (accuracy, time)."""
    _install(session)
    session.run("pytest", "-q", "-m", "slow", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session
def quickstart(session: nox.Session) -> None:
    """The main job: teacher, KD student and plain student on the synthetic faces; one table."""
    _install(session)
    session.run("pocketnet", "experiment=quickstart", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Speed targets, printed as ratios measured side by side."""
    _install(session)
    session.run("python", "benchmarks/bench_teacher_step.py", *session.posargs)
    session.run("python", "benchmarks/bench_student_step.py")
    session.run("python", "benchmarks/bench_verification.py")
    session.run("python", "benchmarks/bench_data.py")
    session.run("python", "benchmarks/bench_backbones.py")
    session.run("python", "benchmarks/bench_search_step.py")
    session.run("python", "benchmarks/bench_onnx.py")
