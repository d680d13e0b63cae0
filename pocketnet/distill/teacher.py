"""The frozen teacher of the student stage, from a teacher bank, a run's Lightning checkpoint
or a backbone file, or several of them as one (:class:`TeacherEnsemble`: multi-teacher KD).

The teacher is always in eval mode, never needs gradients and is not a registered submodule of
the student (so it is outside the optimizer and outside student checkpoints; its ``source`` and
``step`` are saved instead). A teacher swap loads new weights into the same modules. Its
backbone's weights and inputs are channels-last (as ``trainer.channels_last`` makes a trained
backbone's): the same embeddings, and teacher_lfw's forward 1.3-1.5x faster on a 2-core CPU
(``benchmarks/bench_student_step.py``); a swap's copy into the weights keeps that format.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from pocketnet.distill.teacher_bank import BankEntry, TeacherBank
from pocketnet.models.ensemble import EmbeddingEnsemble, check_members
from pocketnet.models.factory import backbone_from_config, head_from_config
from pocketnet.models.heads import MarginHead
from pocketnet.models.inference import inputs_channels_last
from pocketnet.run_folder import RUN_CONFIG, run_folder_of
from pocketnet.untrusted import load_torch_file

__all__ = [
    "FrozenTeacher",
    "TeacherEnsemble",
    "load_teacher",
    "pick_entry",
    "teacher_from_bank",
    "teacher_from_file",
    "teacher_from_run",
    "transfer_weights",
]


class FrozenTeacher(nn.Module):
    """A backbone (and, from a bank, its margin head) frozen in eval mode."""

    def __init__(
        self,
        backbone: nn.Module,
        head: MarginHead | None,
        input_size: int,
        source: str,
        step: int | None = None,
        model_config: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.input_size = input_size
        self.source = source
        self.step = step
        self.model_config = model_config
        self.color: str | None = None  # the colour order it was trained on, where its run says
        self.requires_grad_(False)
        self.eval()
        backbone.to(memory_format=torch.channels_last)
        backbone.register_forward_pre_hook(inputs_channels_last)

    @property
    def embedding_size(self) -> int:
        return int(self.backbone.embedding_size)

    @property
    def num_classes(self) -> int | None:
        return None if self.head is None else int(self.head.weight.shape[0])

    @property
    def parts(self) -> list[tuple[str, int | None]]:
        """The file and training step of each net's weights (one here; an ensemble's each)."""
        return [(self.source, self.step)]

    def train(self, mode: bool = True) -> FrozenTeacher:
        """Stays in eval mode whatever is asked (BN statistics and dropout frozen)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    @torch.no_grad()
    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Class logits without margin over the teacher's training identities."""
        if self.head is None:
            raise ValueError(
                f"teacher {self.source} has no head (a backbone file): soft-target KD needs a "
                "teacher from a bank (stage.teacher.bank)"
            )
        return self.head.logits(embeddings)

    def check_same_model(self, payload: dict[str, Any], source: str) -> None:
        """A bank checkpoint ``payload`` must hold this teacher's model (config and classes)."""
        if payload.get("model_config") != self.model_config:
            raise ValueError(
                f"teacher checkpoint {source} is another model than {self.source}: "
                f"{_describe(payload.get('model_config'))} vs {_describe(self.model_config)}"
            )

    def load_payload(self, payload: dict[str, Any], source: str) -> None:
        """Swap in the weights of a bank checkpoint of the same architecture."""
        self.check_same_model(payload, source)
        self.backbone.load_state_dict(payload["backbone"])
        if self.head is not None:
            self.head.load_state_dict(payload["head"])
        self.source, self.step = source, int(payload["step"])


class TeacherEnsemble(FrozenTeacher):
    """Several frozen teachers as one (multi-teacher KD): the embedding is
    :class:`EmbeddingEnsemble`'s (each net's L2-normalised, concatenated, unit length) and the
    head's centres each net's normalised centres concatenated the same way, so a class's cosine
    logit is exactly the mean of the nets' (one scale ``s``). Soft targets are the nets' mean
    logits; embedding KD matches the concatenation. Its weights are fixed: no bank swaps."""

    def __init__(self, members: Sequence[FrozenTeacher]):
        first = members[0]
        described = [(m.source, m.input_size, m.color) for m in members]
        check_members(described, "stage.teacher.ensemble: the teachers")
        heads = [m.head for m in members]
        with_heads = all(h is not None for h in heads)  # else (a backbone file): embedding KD
        softmax = [m.source for m in members if m.head is not None and not m.head.normalize]
        if softmax:
            raise ValueError(
                f"stage.teacher.ensemble: {softmax[0]} has a softmax head (head.normalize=false); "
                "the ensemble averages cosine logits"
            )
        if with_heads and len({(m.num_classes, m.head.s) for m in members}) > 1:
            raise ValueError(
                "stage.teacher.ensemble: the teachers' heads must have one class count and "
                "cosine scale to average their logits: "
                + ", ".join(f"{m.source} {m.num_classes} classes, s={m.head.s}" for m in members)
            )
        backbone = EmbeddingEnsemble([m.backbone for m in members])
        head = None
        if with_heads:
            cfg = {**first.model_config["head"], "sample_rate": 1.0}
            head = head_from_config(cfg, backbone.embedding_size, first.num_classes)
            centres = [F.normalize(h.weight.float(), dim=1) for h in heads]
            with torch.no_grad():
                head.weight.copy_(torch.cat(centres, dim=1))
        super().__init__(backbone, head, first.input_size, " + ".join(m.source for m in members))
        self._parts = [(m.source, m.step) for m in members]
        self.color = next((m.color for m in members if m.color), None)

    @property
    def parts(self) -> list[tuple[str, int | None]]:
        return list(self._parts)

    def check_same_model(self, payload: dict[str, Any], source: str) -> None:
        raise ValueError(
            f"the teacher ensemble {self.source} is fixed: it cannot load {source} "
            "(kd=multi_step and other bank swaps need one teacher)"
        )


def _describe(model_config: dict[str, Any] | None) -> str:
    if not model_config:
        return "(no model_config)"
    b = model_config["backbone"]
    return (
        f"{b.get('name')} {b.get('embedding_size')}-d at {model_config['input_size']} px, "
        f"{model_config['num_classes']} classes"
    )


def _from_payload(payload: dict[str, Any], source: str) -> FrozenTeacher:
    """The teacher a bank-style payload (``model_config``, ``backbone``, ``head``, ``step``)
    holds, rebuilt from its model config."""
    mc = payload["model_config"]
    backbone_cfg = {**mc["backbone"]}
    if "checkpoint" in backbone_cfg:
        backbone_cfg["checkpoint"] = None  # the payload holds the weights
    backbone = backbone_from_config(backbone_cfg, mc["input_size"])
    head = head_from_config(mc["head"], backbone_cfg["embedding_size"], mc["num_classes"])
    teacher = FrozenTeacher(backbone, head, mc["input_size"], source, None, mc)
    teacher.load_payload(payload, source)
    return teacher


def run_color(run_dir: Path | None) -> str | None:
    """``data.color`` of the run whose folder is ``run_dir`` (None without its config.yaml)."""
    if run_dir is None or not (run_dir / RUN_CONFIG).is_file():
        return None
    color = OmegaConf.select(OmegaConf.load(run_dir / RUN_CONFIG), "data.color", default=None)
    return None if color is None else str(color)


def teacher_from_bank(bank: TeacherBank, entry: BankEntry) -> FrozenTeacher:
    """Rebuild the teacher of a bank checkpoint from its stored model config and load it."""
    teacher = _from_payload(bank.load(entry), str(bank.root / entry.file))
    teacher.color = run_color(bank.root.parent)
    return teacher


def teacher_from_run(path: str | Path, key: str) -> FrozenTeacher:
    """The backbone and margin head of a teacher or student run's Lightning checkpoint, rebuilt
    from the hyperparameters the run saved (``FaceModule.save_rebuild_spec``); ``key`` is the
    config key that named the file, for the errors."""
    payload = load_torch_file(path, key)
    hp = payload.get("hyper_parameters") if isinstance(payload, dict) else None
    if (
        not isinstance(hp, dict)
        or "state_dict" not in payload
        or not {"backbone", "head"} <= hp.keys()
    ):
        raise ValueError(
            f"{key}={path}: not the Lightning checkpoint of a teacher or student run (it names "
            "no backbone and head); give a teacher bank folder or a run's checkpoints/*.ckpt"
        )
    state = payload["state_dict"]

    def weights(prefix: str) -> dict[str, torch.Tensor]:
        return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}

    try:
        model_config = {
            "backbone": hp["backbone"]["config"],
            "head": hp["head"]["config"],
            "input_size": int(hp["backbone"]["input_size"]),
            "num_classes": int(hp["head"]["num_classes"]),
        }
        bank_style = {
            "model_config": model_config,
            "backbone": weights("backbone."),
            "head": weights("head."),
            "step": payload.get("global_step", 0),
        }
        teacher = _from_payload(bank_style, str(path))
    except (KeyError, TypeError, RuntimeError) as err:  # another layout, or weights that misfit
        detail = " ".join(str(err).split())[:300]
        raise ValueError(f"{key}={path}: its model cannot be rebuilt from it ({detail})") from None
    teacher.color = run_color(run_folder_of(path))
    return teacher


def teacher_from_file(
    checkpoint: str, name: str, embedding_size: int, input_size: int
) -> FrozenTeacher:
    """A pocketnet face net (iresnet*, mobilefacenet, pocketnet_*) from a backbone state_dict."""
    cfg = {
        "kind": "face",
        "name": name,
        "embedding_size": embedding_size,
        "checkpoint": checkpoint,
        "model_kwargs": {},
    }
    backbone = backbone_from_config(cfg, input_size)
    return FrozenTeacher(backbone, None, input_size, str(checkpoint))


def pick_entry(bank: TeacherBank, index: int) -> BankEntry:
    """The bank entry at ``index`` (Python indexing: -1 = the last saved)."""
    entries = bank.entries()
    if not -len(entries) <= index < len(entries):
        raise ValueError(
            f"stage.teacher.entry={index}: the bank {bank.root} holds {len(entries)} "
            f"checkpoints ({[e.file for e in entries]})"
        )
    return entries[index]


def load_teacher(cfg: Any) -> FrozenTeacher:
    """The teacher named by ``stage.teacher``: exactly one of ``bank`` and ``checkpoint``, and a
    :class:`TeacherEnsemble` with the ``ensemble`` nets where it names some. Building it draws
    weights that the loaded ones replace; it does so in a forked random stream, so a student
    built after it starts from the same draw as one built without it."""
    with torch.random.fork_rng(devices=[]):
        teacher = _load_teacher(cfg)
        if not cfg.ensemble:
            return teacher
        return TeacherEnsemble([teacher] + [_ensemble_member(p, cfg.entry) for p in cfg.ensemble])


def _ensemble_member(path: str, entry: int) -> FrozenTeacher:
    """A teacher bank folder (its checkpoint ``entry``) or a run's Lightning checkpoint."""
    key = "stage.teacher.ensemble"
    if Path(path).is_dir():
        bank = TeacherBank(path)
        if not bank.index_path.is_file():
            raise ValueError(
                f"{key}={path}: a folder but not a teacher bank (no {bank.index_path.name}); "
                "give <teacher run>/teacher_bank or <run>/checkpoints/last.ckpt"
            )
        return teacher_from_bank(bank, pick_entry(bank, entry))
    if Path(path).suffix == ".onnx":
        raise ValueError(f"{key}={path}: an ONNX graph has no class centres; give its run's .ckpt")
    return teacher_from_run(path, key)


def _load_teacher(cfg: Any) -> FrozenTeacher:
    if (cfg.bank is None) == (cfg.checkpoint is None):
        raise ValueError(
            "stage.teacher: set exactly one of bank=<teacher run>/teacher_bank and "
            f"checkpoint=<backbone file> (got bank={cfg.bank}, checkpoint={cfg.checkpoint})"
        )
    if cfg.bank is not None:
        bank = TeacherBank(cfg.bank)
        return teacher_from_bank(bank, pick_entry(bank, cfg.entry))
    if cfg.backbone is None:
        raise ValueError(
            f"stage.teacher.checkpoint={cfg.checkpoint} needs stage.teacher.backbone: the net "
            "it holds (iresnet18/34/50/100, mobilefacenet, pocketnet_s_128, ...)"
        )
    if not Path(cfg.checkpoint).is_file():
        raise FileNotFoundError(f"stage.teacher.checkpoint: {cfg.checkpoint} does not exist")
    return teacher_from_file(cfg.checkpoint, cfg.backbone, cfg.embedding_size, cfg.input_size)


def transfer_weights(student: nn.Module, teacher: nn.Module) -> list[str]:
    """Knowledge transfer: copy the teacher backbone's weights into a student of the same
    architecture. Keys whose shape follows the input size (``size_dependent_keys``: an fc
    embedding head after flattening, a GDC kernel) keep their fresh initialisation when the
    resolutions differ; they are returned. Anything else that differs is an error."""
    s_state, t_state = student.state_dict(), teacher.state_dict()
    if s_state.keys() != t_state.keys():
        extra = sorted(set(t_state) - set(s_state))[:5]
        missing = sorted(set(s_state) - set(t_state))[:5]
        raise ValueError(
            "stage.init_from_teacher needs the student to be the teacher's architecture: "
            f"teacher-only keys {extra}, student-only keys {missing}"
        )
    allowed = set(getattr(student, "size_dependent_keys", ()))
    skipped = [k for k in s_state if s_state[k].shape != t_state[k].shape]
    bad = [k for k in skipped if k not in allowed]
    if bad:
        k = bad[0]
        raise ValueError(
            f"stage.init_from_teacher: {k} is {tuple(t_state[k].shape)} in the teacher but "
            f"{tuple(s_state[k].shape)} in the student (another width or embedding size?)"
        )
    student.load_state_dict({k: v for k, v in t_state.items() if k not in skipped}, strict=False)
    return skipped
