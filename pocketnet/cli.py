"""The ``pocketnet``, ``pocketnet-eval`` and ``pocketnet-export`` commands: compose the config
with Hydra and run the job. No logic beyond that."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from pocketnet.config.checks import ConfigError, check_overrides
from pocketnet.config.schema import register_configs

__all__ = ["CONF_DIR", "eval_main", "export_main", "main"]


def _conf_dir() -> Path:
    """``conf/`` beside the package (source checkout / editable install) or inside it (wheel)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"pocketnet's conf/ folder is not beside {here}")


CONF_DIR = _conf_dir()
VALUE_FLAGS = {
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
}


def _train(cfg: DictConfig) -> float | None:
    from pocketnet.run import run  # heavy imports only once Hydra has composed

    return run(cfg).get("best acc")


def _evaluate(cfg: DictConfig) -> None:
    from pocketnet.evaluation.app import evaluate_checkpoint

    evaluate_checkpoint(cfg)


def _export(cfg: DictConfig) -> None:
    from pocketnet.evaluation.app import export_checkpoint

    export_checkpoint(cfg)


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


def _launch(config_name: str, job: Callable[[DictConfig], Any]) -> None:
    """Check the command-line overrides against ``conf/<config_name>.yaml``, then run ``job``
    as a Hydra app; a :class:`SetupError` ends it with one line on stderr and exit code 2."""
    register_configs()
    args = sys.argv[1:]
    if not HELP_FLAGS.intersection(args):
        overrides, skip = [], False
        for arg in args:
            if not skip and not arg.startswith("-"):
                overrides.append(arg)
            skip = arg in VALUE_FLAGS
        try:
            check_overrides(CONF_DIR, overrides, config_name)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)
    def app(cfg: DictConfig) -> Any:
        from pocketnet.run import SetupError

        try:
            return job(cfg)
        except SetupError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    app()


def main() -> None:
    """``pocketnet``: train a stage or the pipeline (``conf/config.yaml``)."""
    _launch("config", _train)


def eval_main() -> None:
    """``pocketnet-eval``: verification and practical metrics of a checkpoint
    (``conf/eval.yaml``)."""
    _launch("eval", _evaluate)


def export_main() -> None:
    """``pocketnet-export``: backbone weights and ONNX of a checkpoint (``conf/export.yaml``)."""
    _launch("export", _export)
