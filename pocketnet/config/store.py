"""Register the schemas in Hydra's ConfigStore, and the ``pocketnet.*`` resolvers."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from pocketnet import __version__
from pocketnet.config.compose import CONF_DIR
from pocketnet.config.help import group_listing
from pocketnet.config.schema import (
    SCHEMAS,
    EvalAppConfig,
    ExportAppConfig,
    PocketNetConfig,
    ResolutionConfig,
)
from pocketnet.run_folder import run_folder_of

__all__ = ["beside_run", "register_configs"]


def beside_run(ckpt_path: str, task: str, log_dir: str) -> str:
    """The folder of a ``pocketnet-eval`` / ``pocketnet-export`` job: ``<run>/<task>/<time>``
    for a checkpoint of a pocketnet run (``<run>/checkpoints/*.ckpt`` beside its config.yaml),
    else ``<log_dir>/<task>/runs/<time>``."""
    now = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    run = run_folder_of(ckpt_path)
    return str(run / task / now) if run is not None else str(Path(log_dir) / task / "runs" / now)


def sqlite_url(path: str) -> str:
    """``sqlite:///<absolute path>`` for a database file, its folder made (an Optuna study in a
    sweep folder that does not exist yet)."""
    file = Path(path).resolve()
    file.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{file}"


NO_RUN_YET = "<the run folder, made when the job starts>"


def output_dir() -> str:
    """The job's run folder (Hydra's ``runtime.output_dir``); before a job exists
    (``--cfg job --resolve``) a placeholder that says so."""
    if HydraConfig.initialized():
        folder = OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None)
        if folder:
            return str(folder)
    return NO_RUN_YET


def _kd_schemas(typed: bool) -> dict[str, Any]:
    """``schema/kd/<name>``: each KD method's config class (importing the methods, and torch);
    untyped (``{}``, one per ``conf/kd/*.yaml``) where only the values are needed fast and the
    methods are not imported yet."""
    if not typed and "pocketnet.distill.methods" not in sys.modules:
        return {p.stem: {} for p in (CONF_DIR / "kd").glob("*.yaml")}
    from pocketnet.distill.methods import KD_METHODS  # torch: only where configs are typed

    return {name: cls.Config for name, cls in KD_METHODS.load().items()}


def register_configs(typed: bool = True) -> None:
    """The root schemas (``pocketnet_schema``, ``pocketnet_eval_schema``,
    ``pocketnet_export_schema``), every ``schema/<group>/<kind>`` (the KD methods' from their
    files; with ``typed=False`` untyped, for ``--help`` and shell completion, which show the
    same values without importing torch) and the ``pocketnet.repo_dir`` / ``pocketnet.cwd`` /
    ``pocketnet.beside_run`` / ``pocketnet.output_dir`` / ``pocketnet.help_groups`` /
    ``pocketnet.version`` / ``pocketnet.sqlite`` resolvers."""
    OmegaConf.register_new_resolver(
        "pocketnet.repo_dir", lambda: str(Path(__file__).resolve().parents[2]), replace=True
    )
    # the working directory, also where Hydra's own `hydra:` resolver is not set yet (the sweep
    # folder of a multirun is resolved before any job exists)
    OmegaConf.register_new_resolver("pocketnet.cwd", os.getcwd, replace=True)
    OmegaConf.register_new_resolver("pocketnet.beside_run", beside_run, replace=True)
    OmegaConf.register_new_resolver("pocketnet.help_groups", group_listing, replace=True)
    OmegaConf.register_new_resolver("pocketnet.output_dir", output_dir, replace=True)
    OmegaConf.register_new_resolver("pocketnet.version", lambda: __version__, replace=True)
    OmegaConf.register_new_resolver("pocketnet.sqlite", sqlite_url, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="pocketnet_schema", node=PocketNetConfig)
    cs.store(name="pocketnet_eval_schema", node=EvalAppConfig)
    cs.store(name="pocketnet_export_schema", node=ExportAppConfig)
    cs.store(group="schema", name="resolution", node=ResolutionConfig)
    groups = {**SCHEMAS, "kd": _kd_schemas(typed)}
    for group, options in groups.items():
        for name, node in options.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
