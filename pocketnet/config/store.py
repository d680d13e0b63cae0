"""Register the schemas in Hydra's ConfigStore, and the ``pocketnet.*`` resolvers."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from pocketnet.config.schema import (
    SCHEMAS,
    EvalAppConfig,
    ExportAppConfig,
    PocketNetConfig,
    ResolutionConfig,
)
from pocketnet.distill.methods import KD_METHODS

__all__ = ["register_configs"]


def register_configs() -> None:
    """The root schemas (``pocketnet_schema``, ``pocketnet_eval_schema``,
    ``pocketnet_export_schema``), every ``schema/<group>/<kind>`` (the KD methods' from their
    files) and the ``pocketnet.repo_dir`` / ``pocketnet.cwd`` resolvers."""
    OmegaConf.register_new_resolver(
        "pocketnet.repo_dir", lambda: str(Path(__file__).resolve().parents[2]), replace=True
    )
    # the working directory, also where Hydra's own `hydra:` resolver is not set yet (the sweep
    # folder of a multirun is resolved before any job exists)
    OmegaConf.register_new_resolver("pocketnet.cwd", os.getcwd, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="pocketnet_schema", node=PocketNetConfig)
    cs.store(name="pocketnet_eval_schema", node=EvalAppConfig)
    cs.store(name="pocketnet_export_schema", node=ExportAppConfig)
    cs.store(group="schema", name="resolution", node=ResolutionConfig)
    groups = {**SCHEMAS, "kd": {name: cls.Config for name, cls in KD_METHODS.load().items()}}
    for group, options in groups.items():
        for name, node in options.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
