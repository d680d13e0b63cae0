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
from typing import Any, NoReturn

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from pocketnet import __version__
from pocketnet.config.compose import CONF_DIR
from pocketnet.config.help import help_text
from pocketnet.config.store import register_configs

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
HELP = {"-h", "--help"}
# answered from the config alone: no override check, no typed KD schemas, no torch (fast)
FAST_FLAGS = {"-h", "--help", "--hydra-help", "--shell-completion", "-sc"}


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


def _print_help(config_name: str, overrides: list[str]) -> NoReturn:
    """``--help``: the command's help with the config its overrides compose; exit."""
    try:
        print(help_text(config_name, overrides))
    except (HydraException, OmegaConfBaseException) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(0)


def _launch(config_name: str, job: Callable[[DictConfig], Any]) -> None:
    """Check the command-line overrides against ``conf/<config_name>.yaml``, then run ``job``
    as a Hydra app."""
    args = sys.argv[1:]
    if "--version" in args:
        print(versions())
        sys.exit(0)
    register_configs(typed=not FAST_FLAGS.intersection(args))
    if HELP.intersection(args):
        _print_help(config_name, _overrides(args))
    if not HELP_FLAGS.intersection(args):
        from pocketnet.config.checks import ConfigError, check_overrides

        try:
            check_overrides(_overrides(args), config_name)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)
    def app(cfg: DictConfig) -> Any:
        from pocketnet.console import configure_console
        from pocketnet.runtime import SetupError
        from pocketnet.sweep_ddp import ddp_in_sweep_job

        configure_console()
        try:
            with ddp_in_sweep_job():
                return job(cfg)
        except SetupError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    app()


# The jobs import torch, Lightning and timm when they run, not when the command starts.


def _train(cfg: DictConfig) -> float | None:
    from pocketnet.run import run

    return run(cfg).best_acc  # the objective of a sweeper


def _evaluate(cfg: DictConfig) -> Any:
    from pocketnet.evaluation.app import evaluate_checkpoint

    return evaluate_checkpoint(cfg)


def _export(cfg: DictConfig) -> Any:
    from pocketnet.evaluation.app import export_checkpoint

    return export_checkpoint(cfg)


def main() -> None:
    """``pocketnet``: train a stage or the pipeline (``conf/config.yaml``)."""
    if not _overrides(sys.argv[1:]) and not (FAST_FLAGS | {"--version"}).intersection(sys.argv[1:]):
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
    _launch("eval", _evaluate)


def export_main() -> None:
    """``pocketnet-export``: backbone weights and ONNX of a checkpoint (``conf/export.yaml``)."""
    _launch("export", _export)
