"""A teacher trained once and shared by every student that names it (``stage.teacher.train``).

``stage.teacher.train`` is a list of overrides of a teacher run, e.g.
``[experiment=lfw_teacher64]``. The first student run that needs it trains that teacher in
``<paths.log_dir>/teachers/<name>-<digest>`` (``<digest>``: of the teacher's resolved config, so
a changed teacher is a new folder); every later one, of any sweep, uses its bank. The student's
``paths`` and its ``debug`` choice carry over to the teacher (``debug=fast`` smoke-tests a whole
table). A lock file serialises runs launched side by side (Hydra's joblib / SLURM launchers):
one trains, the others wait and reuse. An interrupted teacher run has no ``done`` marker, so the
next student trains it again from the start.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from pocketnet.config.compose import compose
from pocketnet.runtime import is_main_process
from pocketnet.stages.teacher import TeacherStage

__all__ = ["shared_teacher_bank", "teacher_run_config"]

log = logging.getLogger(__name__)

DONE = "done.json"  # written when the teacher run has finished
IDENTITY = ("seed", "data", "backbone", "head", "stage", "trainer")  # what makes a teacher


def _debug_choice() -> str | None:
    """The ``debug`` option of the running Hydra job (None outside one, or when not chosen)."""
    if not HydraConfig.initialized():
        return None
    choice = HydraConfig.get().runtime.choices.get("debug")
    return None if choice in (None, "null") else str(choice)


def teacher_run_config(student: DictConfig) -> DictConfig:
    """The teacher run of ``student``'s ``stage.teacher.train``, in its shared folder."""
    overrides = [str(o) for o in student.stage.teacher.train]
    debug = _debug_choice()
    if debug is not None and not any(o.startswith(("debug=", "+debug=")) for o in overrides):
        overrides.append(f"debug={debug}")
    try:
        cfg = compose(overrides)
    except Exception as err:  # Hydra's composition errors name the override
        raise ValueError(f"stage.teacher.train={overrides}: {err}") from None
    if cfg.stage.name != "teacher":
        raise ValueError(
            f"stage.teacher.train={overrides} composes stage={cfg.stage.name}: it must be a "
            "teacher run (a teacher preset, or add stage=teacher)"
        )
    if not cfg.stage.bank.enabled:
        raise ValueError(f"stage.teacher.train={overrides}: the teacher saves no bank")
    with open_dict(cfg):
        for key in ("root_dir", "data_dir", "log_dir", "cache_dir", "shared_dir"):
            cfg.paths[key] = student.paths[key]
        cfg.paths.output_dir = "<shared>"  # not part of the teacher's identity
        resolved = OmegaConf.to_container(cfg, resolve=True)
        identity = {k: resolved[k] for k in IDENTITY}
        text = json.dumps(identity, sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        name = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), "")
        folder = Path(student.paths.log_dir) / "teachers" / f"{name or 'teacher'}-{digest}"
        cfg.paths.output_dir = str(folder)
        cfg.task_name = f"teachers/{folder.name}"
        cfg.print_config = False
    return cfg


def shared_teacher_bank(student: DictConfig) -> Path:
    """The bank of ``student``'s shared teacher, trained first when it is not yet done."""
    cfg = teacher_run_config(student)
    folder = Path(cfg.paths.output_dir)
    bank = Path(cfg.stage.bank.dir)
    done = folder / DONE
    if not done.is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.parent / f"{folder.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a run launched beside this one trains it
            if not done.is_file():
                train = list(student.stage.teacher.train)
                log.info("training the shared teacher %s in %s", train, folder)
                TeacherStage().run(copy.deepcopy(cfg))
                if is_main_process():
                    done.write_text(json.dumps({"bank": str(bank)}))
    log.info("shared teacher: %s", bank)
    return bank
