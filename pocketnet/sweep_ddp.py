"""DDP inside a Hydra multirun job.

Lightning's DDP launcher starts the other processes of a run by running the command again with
``hydra.run.dir`` set to the run's folder. In a multirun job that command is the whole sweep
(``-m`` and every value), and ``hydra.run.dir`` is not the job's folder: each extra process would
run the sweep again into a sweep folder of its own. :func:`ddp_in_sweep_job` makes the command
this job alone (the command's flags but ``-m``, the job's overrides, ``hydra.mode=RUN``: a
config may set MULTIRUN, as ``hparams_search=optuna`` does) in this job's folder, and ends the
job's process group and Lightning's launch variables afterwards, so that the next job of the
sweep starts its own processes. Jobs whose processes a cluster starts (SLURM tasks, torchrun:
``LOCAL_RANK`` set) are left as they are.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict, read_write

__all__ = ["ddp_in_sweep_job"]

# what Lightning's launcher sets in the first process (lightning.fabric ... subprocess_script)
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def _flags(args: list[str]) -> list[str]:
    """The command line's flags (and their values) but ``-m``: ``--config-dir``, ...."""
    from pocketnet.cli import VALUE_FLAGS

    kept, value = [], False
    for arg in args:
        if value or (arg.startswith("-") and arg not in ("-m", "--multirun")):
            kept.append(arg)
            value = not value and arg in VALUE_FLAGS
    return kept


@contextmanager
def ddp_in_sweep_job() -> Iterator[None]:
    """Around one job of a multirun: DDP's extra processes run this job, in its folder."""
    if not HydraConfig.initialized() or "LOCAL_RANK" in os.environ:
        yield
        return
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        yield
        return
    argv, env = sys.argv, {key: os.environ.get(key) for key in LAUNCH_ENV}
    with read_write(hydra), open_dict(hydra):
        hydra.run.dir = hydra.runtime.output_dir
    sys.argv = [argv[0], *_flags(argv[1:]), *hydra.overrides.task, "hydra.mode=RUN"]
    try:
        yield
    finally:
        sys.argv = argv
        dist = sys.modules.get("torch.distributed")
        if dist is not None and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
