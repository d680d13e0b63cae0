"""``callbacks=[default,ema]``: a weight average that validation, checkpoints, the teacher bank
and the trained model share, in real teacher runs (Lightning Trainer, Hydra config)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from pocketnet.distill.teacher_bank import TeacherBank
from pocketnet.run import run
from pocketnet.runtime import SetupError
from pocketnet.stages.stage import STAGES
from pocketnet.stages.training import setup_run
from pocketnet.untrusted import load_torch_file
from tests.conftest import compose_run
from tests.test_teacher_run import FAST

EMA = ["callbacks=[default,ema]", "callbacks.extra.ema.decay=0.5"]


def _model(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A module's weights without its metric states (such as the best accuracy so far: the
    average's copy of those is stale, and the module's own are restored on resume)."""
    return {k: v for k, v in state.items() if k.startswith(("backbone.", "head."))}


def _differ(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str = "") -> bool:
    return any(not torch.equal(v, b[f"{prefix}{k}"]) for k, v in a.items())


def test_the_checkpoint_and_the_bank_hold_the_average(tmp_path):
    cfg = compose_run(tmp_path, [*FAST, *EMA])
    run(cfg)
    ckpt = load_torch_file(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    average, current = ckpt["state_dict"], ckpt["current_model_state"]
    assert _differ(_model(average), current)  # decay 0.5: the average lags the weights
    bank = TeacherBank(cfg.stage.bank.dir)
    first, last = (bank.load(e) for e in bank.entries())
    for part in ("backbone", "head"):
        assert last[part].keys() and not _differ(last[part], average, f"{part}.")
        assert _differ(first[part], last[part])  # the average moved between the epochs


def test_a_finished_run_resumed_reports_the_average(tmp_path):
    """Resuming the last checkpoint of a finished run trains nothing (Lightning skips
    on_train_end): the module must still end as the average, not the raw weights."""
    first = compose_run(tmp_path / "a", [*FAST, *EMA])
    run(first)
    ckpt = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    cfg = compose_run(tmp_path / "b", [*FAST, *EMA, f"ckpt_path={ckpt}"])
    ready = setup_run(STAGES.get("teacher")(), cfg, tmp_path / "b" / "run")
    module = ready.parts.module
    ready.trainer.fit(module, datamodule=ready.parts.datamodule, ckpt_path=ckpt, weights_only=True)
    saved = load_torch_file(ckpt)
    assert ready.trainer.global_step == saved["global_step"]  # nothing trained
    assert not _differ(_model(module.state_dict()), saved["state_dict"])


class StopInValidation(L.Callback):
    """Ctrl-C during the second validation, after recording the weights validation sees."""

    def __init__(self) -> None:
        self.seen: dict[str, torch.Tensor] = {}

    def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.seen = {k: v.clone() for k, v in module.state_dict().items()}

    def on_validation_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.current_epoch == 1:
            torch.save(self.seen, Path(trainer.default_root_dir) / "seen.pt")
            raise KeyboardInterrupt


def test_a_stop_during_validation_saves_the_average_as_the_weights(tmp_path):
    """The average is swapped into the module during validation: interrupted.ckpt must still
    hold it as state_dict and the raw weights as current_model_state."""
    stop = ["+callbacks.extra.stop._target_=tests.test_ema.StopInValidation"]
    cfg = compose_run(tmp_path, [*FAST, *EMA, *stop])
    with pytest.raises((SystemExit, KeyboardInterrupt)):
        run(cfg)
    out = Path(cfg.paths.output_dir)
    seen = torch.load(out / "seen.pt", weights_only=True)
    saved = load_torch_file(out / "checkpoints" / "interrupted.ckpt")
    assert not _differ(_model(saved["state_dict"]), seen)
    assert _differ(_model(saved["current_model_state"]), seen)


def test_ema_is_refused_where_it_is_not_exact(tmp_path):
    student = ["stage=student", "backbone=resnet18_tiny", "kd=none"]
    with pytest.raises(SetupError, match=r"ema \(pocketnet.ema.WeightEMA\) averages weights, wh"):
        run(compose_run(tmp_path / "s", [*FAST, *student, *EMA]))

    averaged = compose_run(tmp_path / "b", [*FAST, *EMA])
    run(averaged)
    ckpt = Path(averaged.paths.output_dir) / "checkpoints" / "last.ckpt"
    resumed = compose_run(tmp_path / "c", [*FAST, "trainer.max_epochs=3", f"ckpt_path={ckpt}"])
    with pytest.raises(SetupError, match=r"written with weight averaging .* with the same callb"):
        run(resumed)


def test_the_update_casts_half_precision_weights_and_copies_counters():
    """trainer.precision=bf16-true: the fp32 average follows bf16 weights; BatchNorm's step
    counters are the module's, not an average truncated to an integer."""
    from torch.optim.swa_utils import AveragedModel

    from pocketnet.ema import WeightEMA

    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    average = AveragedModel(net, use_buffers=True, **WeightEMA(decay=0.75)._kwargs)
    net.to(torch.bfloat16)
    average.update_parameters(net)  # the first update copies
    start = net[0].weight.detach().float().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].num_batches_tracked.fill_(300)
    average.update_parameters(net)
    expected = 0.75 * start + 0.25 * net[0].weight.float()
    torch.testing.assert_close(average.module[0].weight.float(), expected, rtol=0, atol=1e-6)
    assert int(average.module[1].num_batches_tracked) == 300
