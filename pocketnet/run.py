"""Run a composed ``pocketnet`` config: the stage named by ``stage.name`` does the work."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from pocketnet.config.values import check_values
from pocketnet.console import print_config_tree
from pocketnet.results import PipelineResult, RunResult
from pocketnet.run_folder import LAST
from pocketnet.runtime import SetupError
from pocketnet.stages.stage import STAGES

__all__ = ["check_devices", "run"]


def check_devices(cfg: DictConfig) -> None:
    """A GPU trainer on a machine without (enough) CUDA GPUs: one line, before any work."""
    accelerator = OmegaConf.select(cfg, "trainer.accelerator")
    if accelerator not in ("gpu", "cuda"):
        return
    devices = OmegaConf.select(cfg, "trainer.devices")
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    wanted = len(devices) if isinstance(devices, ListConfig | list) else devices
    if found == 0 or (isinstance(wanted, int) and wanted > found):
        raise SetupError(
            f"trainer.accelerator={accelerator} trainer.devices={devices}: this machine has "
            f"{found} CUDA GPU(s); use trainer=cpu (or trainer.accelerator=cpu), or fewer devices"
        )


def run(cfg: DictConfig) -> RunResult | PipelineResult:
    """Print the config, check what needs no stage, run the stage; its results."""
    if cfg.print_config:
        print_config_tree(cfg)
    if cfg.ckpt_path not in (None, LAST) and not Path(cfg.ckpt_path).is_file():
        raise SetupError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    check_devices(cfg)
    try:
        check_values(cfg)
        stage = STAGES.get(cfg.stage.name)
    except (ValueError, OSError) as err:
        raise SetupError(str(err)) from None
    return stage().run(cfg)
