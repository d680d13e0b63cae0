"""A teacher trained once and shared by every student that names it (``stage.teacher.train``).

``stage.teacher.train`` is a list of overrides of a teacher run, e.g.
``['experiment=teacher_lfw']``. The first student run that needs a teacher trains it in
``<paths.log_dir>/teachers/<name>-<digest>``; every later one, of any sweep, uses its bank.

- The digest covers the teacher's whole resolved config except what does not change the
  teacher (paths, loggers, progress, loader workers, ...), with the data folder's files (names
  and sizes) in place of its location, and pocketnet's version: a changed teacher is a new
  folder; a moved checkout is not.
- The teacher is composed from its own overrides alone, plus the student command's ``debug``
  and ``trainer`` choices (``debug=fast`` smoke-tests a whole table; ``trainer=ddp`` trains the
  teacher as the student trains). It trains on its own data, whatever the student's.
- Runs launched side by side on one machine (Hydra's joblib launcher) or on nodes sharing a file
  system with working ``flock`` (SLURM) take a lock: one trains, the others wait, then reuse.
  The processes of one DDP run take no lock: rank 0 trains the teacher, the others join it.
- An interrupted teacher run resumes from its newest checkpoint (``ckpt_path=last``); one that
  failed while training (a NaN loss, say) leaves ``failed.json``, which later students report
  instead of training it again (delete the folder to retry).
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

import pocketnet
from pocketnet.config.compose import compose, hydra_choice
from pocketnet.config.values import check_values
from pocketnet.distill.cache import file_signature
from pocketnet.run import check_devices
from pocketnet.run_folder import LAST, RUN_CONTROL
from pocketnet.runtime import SetupError, is_main_process
from pocketnet.stages.teacher import TeacherStage

__all__ = ["shared_teacher_bank", "teacher_run_config"]

log = logging.getLogger(__name__)

DONE, FAILED = "done.json", "failed.json"
CARRIED = ("debug", "trainer")  # the student command's choices that reach its teacher
# keys that do not change the trained teacher
# keys added after teachers were shared, left out at the value that trains as before: adding an
# option does not retrain (and so split) the teacher every table shares
NEUTRAL = {("stage", "optimizer", "fused"): False, ("head", "label_smoothing"): 0.0}


def _files(root: str | None) -> Any:
    """The data folder's files by name and size (its location is not the teacher's identity)."""
    if not root or not Path(root).is_dir():
        return root
    return [(Path(path).name, size) for path, size, _ in file_signature(root)]


def _identity(cfg: DictConfig) -> str:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for key in RUN_CONTROL:
        *parents, leaf = key.split(".")
        node = resolved
        for part in parents:
            node = node.get(part) or {}
        node.pop(leaf, None)
    data = resolved["data"]
    data["root"] = _files(data.get("root"))
    for *path, key in NEUTRAL:
        node = resolved
        for part in path:
            node = node.get(part) or {}
        if key in node and node[key] == NEUTRAL[(*path, key)]:
            del node[key]
    resolved["pocketnet"] = pocketnet.__version__
    text = json.dumps(resolved, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def teacher_run_config(student: DictConfig) -> DictConfig:
    """The teacher run of ``student``'s ``stage.teacher.train``, in its shared folder (checked:
    a teacher stage that saves a bank, valid values, the devices it asks for)."""
    overrides = [str(o) for o in student.stage.teacher.train]
    if not overrides:
        raise ValueError(
            "stage.teacher.train=[]: name the teacher run, e.g. "
            "\"stage.teacher.train=['experiment=teacher_lfw']\""
        )
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    carried = {k: hydra_choice(k) for k in CARRIED if k not in given}
    overrides += [f"{k}={v}" for k, v in carried.items() if v is not None]
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
        cfg.paths.output_dir = "<shared>"
        name = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), "")
        folder = Path(student.paths.log_dir) / "teachers" / f"{name or 'teacher'}-{_identity(cfg)}"
        cfg.paths.output_dir = str(folder)
        cfg.task_name = f"teachers/{folder.name}"
        cfg.print_config = False
        cfg.ckpt_path = LAST  # an interrupted teacher run resumes
    check_values(cfg)
    try:
        check_devices(cfg)
    except SetupError as err:  # the student's trainer keys do not reach its teacher
        raise SetupError(
            f"the shared teacher of stage.teacher.train={overrides}: {err} (its trainer is its "
            "own overrides' plus the student's trainer= choice: e.g. trainer=cpu)"
        ) from None
    return cfg


def _train(cfg: DictConfig, folder: Path) -> None:
    """Train the teacher of ``cfg`` unless done; a failure is recorded for later students."""
    failed = folder / FAILED
    if failed.is_file():
        raise SetupError(
            f"the shared teacher in {folder} failed earlier: "
            f"{json.loads(failed.read_text())['error']} (delete the folder to train it again)"
        )
    log.info("training the shared teacher in %s", folder)
    try:
        TeacherStage().run(copy.deepcopy(cfg))
    except SetupError as err:  # found before training: nothing to record
        raise SetupError(f"the shared teacher in {folder}: {err}") from None
    except Exception as err:  # after training time was spent: not again by every student
        if is_main_process():
            failed.write_text(json.dumps({"error": f"{type(err).__name__}: {err}"}))
        raise SetupError(f"the shared teacher in {folder}: {err}") from err
    if is_main_process():
        (folder / DONE).write_text(json.dumps({"bank": cfg.stage.bank.dir}))


def shared_teacher_bank(cfg: DictConfig) -> Path:
    """The bank of the shared teacher run ``cfg`` (:func:`teacher_run_config`), trained first
    when it is not yet done."""
    folder = Path(cfg.paths.output_dir)
    if not (folder / DONE).is_file():
        if not is_main_process():  # a DDP rank: rank 0 holds the lock and trains; join it
            _train(cfg, folder)
        else:
            folder.parent.mkdir(parents=True, exist_ok=True)
            with open(folder.parent / f"{folder.name}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # a run launched beside this one trains it
                if not (folder / DONE).is_file():
                    _train(cfg, folder)
    log.info("shared teacher: %s", cfg.stage.bank.dir)
    return Path(cfg.stage.bank.dir)
