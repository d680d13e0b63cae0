"""The ``pocketnet``, ``pocketnet-eval`` and ``pocketnet-export`` commands: check the command
line, compose the config with Hydra, run the job; a set-up mistake ends with one line on stderr
and exit code 2.

``pocketnet`` with no override at all runs the quickstart (``experiment=quickstart``, the main
job) and says so; any override gives exactly the config it names over the neutral defaults.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import hydra
from omegaconf import DictConfig

from pocketnet import __version__
from pocketnet.config.checks import ConfigError, check_overrides
from pocketnet.config.store import register_configs
from pocketnet.console import configure_console
from pocketnet.evaluation.app import evaluate_checkpoint, export_checkpoint
from pocketnet.run import run
from pocketnet.runtime import CONF_DIR, SetupError

__all__ = ["eval_main", "export_main", "main"]

VALUE_FLAGS = {  # Hydra's flags that take the next argument
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--info",
    "-i",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
}
HELP_FLAGS = {
    "-h",
    "--help",
    "--hydra-help",
    "--info",
    "-i",
    "--cfg",
    "-c",
    "--resolve",
    "--shell-completion",
    "-sc",
    "--version",
}
QUICKSTART = "experiment=quickstart"


def _overrides(args: list[str]) -> list[str]:
    """The config overrides among the command-line arguments (not flags or their values)."""
    overrides, skip = [], False
    for arg in args:
        if not skip and not arg.startswith("-"):
            overrides.append(arg)
        skip = arg in VALUE_FLAGS
    return overrides


def versions() -> str:
    """``pocketnet X (hydra Y, lightning Z, torch T, timm U)``: the package's and its engines'."""
    engines = ", ".join(
        f"{name} {version(name)}" for name in ("hydra-core", "lightning", "torch", "timm")
    )
    return f"pocketnet {__version__} ({engines})"


def _launch(config_name: str, job: Callable[[DictConfig], Any]) -> None:
    """Check the command-line overrides against ``conf/<config_name>.yaml``, then run ``job``
    as a Hydra app."""
    register_configs()
    args = sys.argv[1:]
    if "--version" in args:
        print(versions())
        sys.exit(0)
    if not HELP_FLAGS.intersection(args):
        try:
            check_overrides(_overrides(args), config_name)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)
    def app(cfg: DictConfig) -> Any:
        configure_console()
        try:
            return job(cfg)
        except SetupError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    app()


def _train(cfg: DictConfig) -> float | None:
    return run(cfg).best_acc  # the objective of a sweeper


def main() -> None:
    """``pocketnet``: train a stage or the pipeline (``conf/config.yaml``)."""
    quiet = {"--help", "-h", "--hydra-help", "--shell-completion", "-sc", "--version"}
    if not _overrides(sys.argv[1:]) and not quiet.intersection(sys.argv[1:]):
        print(
            f"pocketnet: no overrides given, running the quickstart ({QUICKSTART}); name what "
            "to run, e.g. `pocketnet stage=teacher data=rec data.root=<pack>`, to start from "
            "the neutral defaults",
            file=sys.stderr,
        )
        sys.argv.append(QUICKSTART)
    _launch("config", _train)


def eval_main() -> None:
    """``pocketnet-eval``: verification and practical metrics of a checkpoint
    (``conf/eval.yaml``)."""
    _launch("eval", evaluate_checkpoint)


def export_main() -> None:
    """``pocketnet-export``: backbone weights and ONNX of a checkpoint (``conf/export.yaml``)."""
    _launch("export", export_checkpoint)
