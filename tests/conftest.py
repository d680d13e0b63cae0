"""Shared fixtures: real Hydra composition of the project's conf/ and in-process runs."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from pocketnet.config.compose import CONF_DIR
from pocketnet.config.compose import compose as compose_config
from pocketnet.config.store import register_configs

if "PYTEST_XDIST_WORKER" in os.environ:
    # ``pytest -n <cores>`` (nox -s tests): one torch thread a worker, in its subprocesses too;
    # more would only contend for the cores the other workers use
    os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
register_configs()

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
LFW_DEV = SHARED / "data" / "lfw-dev"
# a teacher run of seconds: a tiny net on tiny synthetic faces
TINY_TEACHER = ["stage=teacher", "backbone=resnet18_tiny", "debug=fast", "data=tiny"]


def compose_run(
    tmp_path: Path,
    overrides: list[str],
    config_name: str = "config",
    out: str = "run",
    cache: Path | None = None,
) -> DictConfig:
    """The config a ``pocketnet`` job (``pocketnet-eval``: ``config_name="eval"``, ...) would
    get, with its run folder ``tmp_path / out`` and its caches in ``cache`` (default
    ``tmp_path / "cache"``)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / out)
        cfg.paths.cache_dir = str(cache or tmp_path / "cache")
        cfg.paths.log_dir = str(tmp_path / "logs")
        del cfg.hydra
    return cfg


def pocketnet_command(cwd: Path, args: list[str], command: str = "pocketnet") -> int:
    """``<command> <args>`` (``pocketnet`` or ``pocketnet-eval``) run in ``cwd`` as a user
    would, but in this process (Hydra's own launch, a ``-m`` sweep's jobs one after the other):
    no second interpreter to start. Its exit code."""
    from pocketnet import cli

    main = {"pocketnet": cli.main, "pocketnet-eval": cli.eval_main}[command]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # Hydra sets up the job's logging
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        patch.setattr(sys, "argv", [command, *args])
        patch.delenv("POCKETNET_ROOT", raising=False)  # runs land under the working directory
        patch.delenv("POCKETNET_CACHE", raising=False)
        try:
            main()
        except SystemExit as stop:
            return stop.code or 0
        finally:
            for handler in root.handlers:
                if handler not in handlers:
                    handler.close()
            root.handlers[:] = handlers
            root.setLevel(level)
    return 0


@pytest.fixture
def compose():
    def _compose(overrides: list[str]) -> DictConfig:
        return compose_config(overrides)

    return _compose
