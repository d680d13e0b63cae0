"""What a stage is: a registered part, chosen by ``stage=<name>``, that runs a composed config."""

from __future__ import annotations

from typing import Any, ClassVar

from omegaconf import DictConfig

from pocketnet.registry import Registry
from pocketnet.results import PipelineResult, RunResult

__all__ = ["STAGES", "Stage"]


class Stage:
    """A stage of the workflow. Subclasses register with ``@STAGES.register("<name>")``."""

    name: ClassVar[str]  # set by the registry
    has_backbone: ClassVar[bool] = True  # its checkpoints hold a backbone to evaluate / export

    @staticmethod
    def input_size(cfg: Any) -> int:
        """The input size of the model the stage trains (``data.resolution`` unless the stage
        says otherwise); also how evaluation reads a run's checkpoint."""
        return int(cfg.data.resolution)

    def run(self, cfg: DictConfig) -> RunResult | PipelineResult:
        raise NotImplementedError


STAGES: Registry[Stage] = Registry("stage.name", "pocketnet.stages")
