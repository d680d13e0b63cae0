"""Run a composed ``pocketnet`` config: the stage named by ``stage.name`` does the work."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from pocketnet.config.values import check_values
from pocketnet.console import print_config_tree
from pocketnet.results import PipelineResult, RunResult
from pocketnet.runtime import SetupError
from pocketnet.stages.stage import STAGES

__all__ = ["run"]


def run(cfg: DictConfig) -> RunResult | PipelineResult:
    """Print the config, check what needs no stage, run the stage; its results."""
    if cfg.print_config:
        print_config_tree(cfg)
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).is_file():
        raise SetupError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    try:
        check_values(cfg)
        stage = STAGES.get(cfg.stage.name)
    except (ValueError, OSError) as err:
        raise SetupError(str(err)) from None
    return stage().run(cfg)
