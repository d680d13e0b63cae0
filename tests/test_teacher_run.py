"""End-to-end teacher runs: real Hydra config, real Lightning Trainer, real wandb offline run."""

import csv
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from pocketnet.console import configure_console
from pocketnet.distill.teacher_bank import TeacherBank
from pocketnet.models.factory import backbone_from_config
from pocketnet.progress import batches_left, format_eta
from pocketnet.run import run
from pocketnet.runtime import SetupError
from pocketnet.stages.base import NonFiniteLossError
from pocketnet.stages.stage import STAGES
from pocketnet.stages.training import apply_speed_options, setup_run
from tests.conftest import compose_run

FAST = [
    "stage=teacher",
    "backbone=resnet18_narrow",
    "debug=fast",
    "data=tiny",
    "print_config=false",
    "callbacks.progress.rich=false",
]


def _csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_teacher_run_logs_to_wandb_offline_and_csv_and_fills_the_bank(tmp_path):
    cfg = compose_run(tmp_path, [*FAST, "logger=default", "stage.bank.fractions=[0.5]"])
    row = run(cfg)
    out = Path(cfg.paths.output_dir)

    results = json.loads((out / "results.json").read_text())
    assert (
        results["params"]
        == row.params
        == sum(p.numel() for p in rebuilt_backbone(cfg).parameters())
    )

    rows = _csv_rows(out)
    accs = [float(r["val/synthetic/acc"]) for r in rows if r.get("val/synthetic/acc")]
    assert len(accs) == 2  # one validation per epoch
    assert results["sets"]["synthetic"]["acc"] == pytest.approx(accs[-1])  # the final figures
    assert results["best_acc"] == pytest.approx(max(accs))  # the best epoch's
    assert any(r.get("train/loss") for r in rows)
    assert any(r.get("model/params") for r in rows)

    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb")), "wandb wrote no offline run file"

    entries = TeacherBank(cfg.stage.bank.dir).entries()
    assert [(e.epoch, e.step) for e in entries] == [(0, 3), (1, 3), (2, 6)]
    assert entries[-1].fraction == 1.0
    assert "val/synthetic/acc" in entries[-1].metrics
    payload = TeacherBank(cfg.stage.bank.dir).load(entries[-1])
    rebuilt = backbone_from_config(
        payload["model_config"]["backbone"], payload["model_config"]["input_size"]
    )
    rebuilt.load_state_dict(payload["backbone"])
    assert payload["model_config"]["num_classes"] == cfg.data.num_train_identities


def rebuilt_backbone(cfg):
    return backbone_from_config(cfg.backbone, cfg.data.resolution)


def test_resume_continues_the_step_counter(tmp_path):
    first = compose_run(tmp_path / "a", FAST)
    run(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 6
    resumed = compose_run(tmp_path / "b", [*FAST, "trainer.max_epochs=3", f"ckpt_path={last}"])
    run(resumed)
    assert resumed.paths.output_dir == first.paths.output_dir  # the run goes on in its folder
    rows = _csv_rows(Path(resumed.paths.output_dir))
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert steps == list(range(9))  # one CSV: steps 0-5, then 6-8 (no restart from step 0)
    state = torch.load(
        Path(resumed.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=False
    )
    assert (state["epoch"], state["global_step"]) == (2, 9)


def test_resuming_another_model_is_one_line_before_training(tmp_path):
    first = compose_run(tmp_path / "a", [*FAST, "trainer.max_epochs=1"])
    run(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    args = [*FAST, "backbone.embedding_size=16", f"ckpt_path={last}"]
    with pytest.raises(SetupError, match=r"differs: backbone.embedding_size: 32 there, 16 here"):
        run(compose_run(tmp_path / "b", args))  # its run, with another config
    elsewhere = tmp_path / "elsewhere.ckpt"  # a new run from its weights: the model must fit
    elsewhere.write_bytes(last.read_bytes())
    args[-1] = f"ckpt_path={elsewhere}"
    message = r"holds another model.*fc.weight is \(32, 1024\) there, \(16, 1024\) here"
    with pytest.raises(SetupError, match=message) as e:
        run(compose_run(tmp_path / "c", args))
    assert "\n" not in str(e.value)


def test_missing_checkpoint_is_reported_before_training(tmp_path):
    cfg = compose_run(tmp_path, [*FAST, f"ckpt_path={tmp_path}/nope.ckpt"])
    with pytest.raises(SetupError, match="nope.ckpt: no such checkpoint"):
        run(cfg)


def test_empty_dataset_is_reported_before_training(tmp_path):
    cfg = compose_run(tmp_path, [*FAST, "data.num_train_identities=0"])
    with pytest.raises(SetupError, match="num_train_identities"):
        run(cfg)


def test_a_batch_larger_than_the_data_is_refused_before_training(tmp_path):
    cfg = compose_run(tmp_path, [*FAST, "data.batch_size=128"])  # data=tiny has 64 images
    with pytest.raises(SetupError, match=r"64 training images make no full batch.*<= 64"):
        run(cfg)


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    cfg = compose_run(
        tmp_path,
        [
            *FAST,
            "stage.optimizer.lr=1e30",
            "trainer.gradient_clip_val=null",
            "stage.scheduler.warmup_epochs=0",
        ],
    )
    with pytest.raises(NonFiniteLossError, match=r"train/loss_margin is (nan|inf)") as err:
        run(cfg)
    assert "lower the optimizer's lr; clip gradients" in str(err.value)
    assert "precision" not in str(err.value)  # it is 32-true already
    assert "last.ckpt" not in str(err.value)  # none was written before the first steps


def test_unusable_data_path_is_reported_before_training(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the data cache folder should be")
    cfg = compose_run(tmp_path, [*FAST, f"data.cache_dir={blocker}/synthetic"])
    with pytest.raises(SetupError, match="not_a_folder"):
        run(cfg)


def test_teacher_trains_a_pocketnet_and_its_bank_rebuilds_it(tmp_path):
    overrides = [*FAST, "backbone=pocketnet_s_128", "+backbone.model_kwargs={C: 4, n_cells: 3}"]
    cfg = compose_run(tmp_path, overrides)
    row = run(cfg)
    assert row.model == "pocketnet_s_128" and row.params < 100_000  # 3 cells of 4 channels
    bank = TeacherBank(cfg.stage.bank.dir)
    payload = bank.load(bank.entries()[-1])
    rebuilt = backbone_from_config(payload["model_config"]["backbone"], 32)
    rebuilt.load_state_dict(payload["backbone"])
    assert type(rebuilt).__name__ == "PocketNet" and len(rebuilt.cells) == 3


def test_lightning_debug_flags_validate_on_the_pairs_they_see(tmp_path):
    """fast_dev_run and limit_val_batches run (issue 20): the metric keeps the complete pairs."""
    cfg = compose_run(tmp_path, [*FAST, "++trainer.fast_dev_run=true", "data.val_batch_size=24"])
    with pytest.warns(UserWarning, match="limited validation: figures on 12 of 40 pairs"):
        row = run(cfg)
    assert 0.0 <= row.best_acc <= 1.0

    cfg = compose_run(tmp_path, [*FAST, "++trainer.fast_dev_run=true", "data.val_batch_size=16"])
    with pytest.raises(SetupError, match="fast_dev_run=True .* validates on 8 pairs"):
        run(cfg)

    cfg = compose_run(tmp_path / "limit", [*FAST, "++trainer.limit_val_batches=2"])
    with pytest.warns(UserWarning, match="figures on 32 of 40 pairs"):
        run(cfg)


def test_a_piped_run_prints_progress_lines_and_no_library_noise(tmp_path, capfd):
    """Output that is not a terminal gets plain progress lines (issue 20), not a silent bar."""
    configure_console()
    cfg = compose_run(tmp_path, [*FAST, "callbacks.progress.line_every_s=0", "logger=default"])
    row = run(cfg)
    out = capfd.readouterr()
    lines = out.out.splitlines()
    steps = [line for line in lines if line.startswith("epoch ") and "  step " in line]
    assert [s.split("  loss")[0] for s in steps] == [
        f"epoch {e}/2  step {i}/3" for e in (1, 2) for i in (1, 2, 3)
    ]
    assert all(" img/s  ETA " in s for s in steps)
    assert sum(line.startswith("epoch 2 validated: val/acc 0.") for line in lines) == 1
    assert f"Total FLOPs: {row.mflops:.1f} M" in out.out  # Lightning's summary: the net's, not 0
    text = out.out + out.err
    for noise in ("litlogger", "anonymous setting", "Run history", "LeafSpec"):
        assert noise not in text
    assert f"wandb: run saved in {tmp_path / 'run' / 'wandb'}" in out.out


def test_eta_format():
    assert [format_eta(s) for s in (0, 59.6, 61, 3600 + 62)] == ["0:00", "1:00", "1:01", "1:01:02"]


def test_the_eta_counts_batches_not_optimiser_steps():
    """Half-way through a 2-epoch fit of 10 batches an epoch, two optimiser steps a batch (a
    search, an adversary): 10 batches are left, whatever Lightning's step counter says."""
    half = (2, 1, 10, -1)  # epoch 1 (0-based) about to start
    assert batches_left(half, (-1, 20, 2.0)) == 10
    # max_steps (optimiser steps) binds first: 30 steps at 2 a batch = 5 batches left
    assert batches_left(half, (30, 20, 2.0)) == 5
    assert batches_left((None, 1, 10, -1), (None, 20, 2.0)) == float("inf")


def test_tensorboard_mlflow_and_early_stopping_come_from_config(tmp_path):
    """logger=[csv,tensorboard,mlflow] and callbacks=[default,early_stopping]: real runs of
    Lightning's own classes, instantiated from their config entries."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_run(
        tmp_path,
        [
            *FAST,
            "logger=[csv,tensorboard,mlflow]",
            "callbacks=[default,early_stopping]",
            "callbacks.extra.early_stopping.patience=1",
            "callbacks.extra.early_stopping.min_delta=0.5",  # no epoch improves that much
            "trainer.max_epochs=5",
            "stage.bank.every_n_epochs=null",
            "stage.bank.fractions=[1.0]",
        ],
    )
    row = run(cfg)
    out = Path(cfg.paths.output_dir)
    accs = [float(r["val/synthetic/acc"]) for r in _csv_rows(out) if r.get("val/synthetic/acc")]
    assert len(accs) == 2  # stopped after the second validation, not the fifth
    # the bank's last fraction was never reached: it holds the teacher the run stopped with
    (entry,) = TeacherBank(cfg.stage.bank.dir).entries()
    assert (entry.epoch, entry.step, entry.fraction) == (2, 6, 0.4)

    (events,) = (out / "tensorboard").glob("events.out.tfevents.*")
    tb = EventAccumulator(str(events.parent))
    tb.Reload()
    assert [e.value for e in tb.Scalars("val/synthetic/acc")] == pytest.approx(accs)

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "pocketnet"]
    (mlrun,) = client.search_runs([experiment.experiment_id])
    history = client.get_metric_history(mlrun.info.run_id, "val/synthetic/acc")
    assert [m.value for m in history] == pytest.approx(accs)
    assert mlrun.data.metrics["val/acc_best"] == pytest.approx(row.best_acc)


@pytest.mark.parametrize(
    "override,message",
    [
        ("+callbacks.extra.x.monitor=val/acc", "callbacks.extra.x needs _target_"),
        ("+callbacks.extra.x._target_=torch.nn.Identity", "gives a Identity, not a Lightning Cal"),
        ("+logger.extra.x._target_=no.such.Logger", "logger.extra.x: Error locating target"),
    ],
)
def test_a_bad_extra_part_is_one_line_naming_it(tmp_path, override, message):
    with pytest.raises(SetupError, match=message):
        run(compose_run(tmp_path, [*FAST, override]))


def _losses_and_backbone(tmp_path: Path, *overrides: str) -> tuple[list[float], nn.Module]:
    """The logged training losses of a fast teacher run and its trained backbone."""
    cfg = compose_run(tmp_path, [*FAST, *overrides])
    torch.manual_seed(cfg.seed)  # as run() seeds, before the model is built
    ready = setup_run(STAGES.get("teacher")(), cfg, Path(cfg.paths.output_dir))
    ready.trainer.fit(ready.parts.module, datamodule=ready.parts.datamodule)
    with open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv") as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r["train/loss"]]
    return losses, ready.parts.module.backbone


def test_channels_last_trains_the_same_model(tmp_path):
    """trainer.channels_last=true: the backbone's weights and inputs channels-last, the same
    losses as the default memory format (same seed and data) to float tolerance."""
    plain, _ = _losses_and_backbone(tmp_path / "a")
    losses, backbone = _losses_and_backbone(tmp_path / "b", "trainer.channels_last=true")
    conv = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert losses == pytest.approx(plain, rel=1e-3)


def test_the_speed_options_undo_for_the_practical_metrics(tmp_path):
    backbone = rebuilt_backbone(compose_run(tmp_path, FAST))
    undo = apply_speed_options(backbone, channels_last=True, compile=False)
    seen = []
    backbone.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous()))
    backbone.eval()(torch.zeros(2, 3, 32, 32))
    undo()
    backbone(torch.zeros(2, 3, 32, 32))
    conv = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d))
    assert seen == [False, True]  # channels-last input while on, as given after undo
    assert conv.weight.is_contiguous()


@pytest.mark.slow
def test_a_compiled_backbone_trains_the_same_model(tmp_path):
    plain, _ = _losses_and_backbone(tmp_path / "a")
    losses, backbone = _losses_and_backbone(tmp_path / "b", "trainer.compile=true")
    assert backbone._compiled_call_impl is not None  # nn.Module.compile() in place
    assert not any("_orig_mod" in k for k in backbone.state_dict())  # checkpoint keys unchanged
    assert losses == pytest.approx(plain, rel=1e-3)
