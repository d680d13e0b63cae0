import csv
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from pocketnet.run import run
from pocketnet.runtime import SetupError
from pocketnet.stages.optim import build_optimizer, build_target_scheduler, lr_factor_fn
from tests.conftest import TINY_TEACHER, compose_run


def _cfg(**kw):
    base = dict(
        name="cosine",
        warmup_epochs=1.0,
        warmup_start_factor=0.0,
        milestones=[],
        gamma=0.1,
        min_lr_factor=0.0,
    )
    return OmegaConf.create({**base, **kw})


def test_linear_warmup_then_cosine_to_the_floor():
    f = lr_factor_fn(_cfg(min_lr_factor=0.1), total_steps=110, steps_per_epoch=10)
    assert [f(s) for s in (0, 5, 10)] == pytest.approx([0.0, 0.5, 1.0])
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(110) == pytest.approx(0.1)


def test_step_schedule_at_fractional_epoch_milestones():
    f = lr_factor_fn(_cfg(name="step", warmup_epochs=0.0, milestones=[2, 3.5]), 100, 20)
    assert [f(39), f(40), f(69), f(70)] == pytest.approx([1.0, 0.1, 0.1, 0.01])


def test_warmup_longer_than_training_is_refused():
    with pytest.raises(ValueError, match="warmup_epochs"):
        lr_factor_fn(_cfg(warmup_epochs=5), total_steps=40, steps_per_epoch=10)


def test_optimizer_skips_frozen_parameters():
    layer = torch.nn.BatchNorm1d(4)
    layer.weight.requires_grad = False
    opt = build_optimizer(
        layer.parameters(),
        OmegaConf.create(
            dict(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True, fused=False)
        ),
    )
    assert isinstance(opt, torch.optim.SGD)
    assert [p.numel() for g in opt.param_groups for p in g["params"]] == [4]
    assert opt.defaults["nesterov"] is True


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_a_fused_optimizer_takes_the_same_steps(name):
    """stage.optimizer.fused=true: one fused kernel per update, the same weights after 5 steps."""
    cfg = OmegaConf.load(Path(__file__).parents[1] / "conf" / "optimizer" / f"{name}.yaml")
    del cfg["defaults"]
    weights = []
    for fused in (False, True):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        start = torch.cat([p.detach().flatten() for p in net.parameters()])
        opt = build_optimizer(net.parameters(), OmegaConf.merge(cfg, {"fused": fused}))
        assert opt.defaults["fused"] is fused
        for _ in range(5):
            opt.zero_grad()
            net(torch.randn(4, 8)).square().mean().backward()
            opt.step()
        weights.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
        assert not torch.allclose(weights[-1], start)
    torch.testing.assert_close(weights[1], weights[0], rtol=1e-5, atol=1e-6)


def _logged_lrs(tmp_path, optimizer: str, *overrides: str):
    """A fast teacher run's config and the lr its ``optimizer`` had at each logged step."""
    fast = [*TINY_TEACHER, "print_config=false"]
    cfg = compose_run(tmp_path, [*fast, *overrides])
    run(cfg)
    with open(tmp_path / "run" / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return cfg, [float(r[f"lr-{optimizer}"]) for r in rows if r.get(f"lr-{optimizer}")]


def test_any_torch_optimizer_and_scheduler_by_class(tmp_path):
    """optimizer=target / scheduler=target from the shipped YAML, composed by Hydra, in a real
    Lightning run: RMSprop with an added argument, ExponentialLR stepped every step."""
    cfg, lrs = _logged_lrs(
        tmp_path,
        "RMSprop",
        "optimizer@stage.optimizer=target",
        "+stage.optimizer.alpha=0.9",
        "scheduler@stage.scheduler=target",
        "stage.scheduler.gamma=0.5",
    )
    assert lrs == pytest.approx([0.01 * 0.5**i for i in range(6)])

    layer = torch.nn.Linear(2, 2)
    opt = build_optimizer(layer.parameters(), cfg.stage.optimizer)
    assert isinstance(opt, torch.optim.RMSprop) and opt.defaults["alpha"] == 0.9


def timm_cosine(t: int, base: float, t_initial: int, warmup_t: int, warmup_init: float, lr_min):
    """timm's CosineLRScheduler (one cycle, warm-up not a prefix) after ``t`` updates, by hand."""
    if t < warmup_t:
        return warmup_init + t * (base - warmup_init) / warmup_t
    return lr_min + 0.5 * (base - lr_min) * (1 + math.cos(math.pi * t / t_initial))


def test_a_timm_scheduler_steps_with_the_updates(tmp_path):
    """scheduler=timm (CosineLRScheduler with warm-up) in a real run: the lr logged at each step
    is timm's formula at the updates made so far."""
    cfg, lrs = _logged_lrs(
        tmp_path,
        "SGD",
        "scheduler@stage.scheduler=timm",
        "stage.scheduler.t_initial=8",
        "stage.scheduler.warmup_t=2",
        "stage.scheduler.warmup_lr_init=0.001",
        "stage.scheduler.lr_min=0.0001",
    )
    base = cfg.stage.optimizer.lr
    assert lrs == pytest.approx([timm_cosine(t, base, 8, 2, 0.001, 0.0001) for t in range(6)])


@pytest.mark.parametrize(
    "node,message",
    [
        ({"name": "target", "_target_": "torch.nn.Linear"}, "is not a torch.optim.optimizer.Opt"),
        ({"name": "target", "_target_": "torch.optim.Nope"}, r"_target_=torch.optim.Nope: "),
    ],
)
def test_a_bad_target_optimizer_names_the_key(node, message):
    with pytest.raises(ValueError, match=message):
        build_optimizer(torch.nn.Linear(2, 2).parameters(), OmegaConf.create(node))


def test_a_scheduler_that_is_neither_torch_nor_timm_is_refused():
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    node = {"name": "target", "_target_": "torch.optim.SGD"}
    with pytest.raises(ValueError, match="LRScheduler or a timm.scheduler.scheduler.Scheduler"):
        build_target_scheduler(opt, OmegaConf.create(node))


def test_a_bad_scheduler_argument_names_the_class():
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    node = {"name": "target", "_target_": "torch.optim.lr_scheduler.StepLR", "step": 3}
    with pytest.raises(ValueError, match="StepLR: .*unexpected keyword argument 'step'"):
        build_target_scheduler(opt, OmegaConf.create(node))


def test_fused_trains_and_is_refused_where_lightning_cannot_clip_it(tmp_path):
    fast = [*TINY_TEACHER, "print_config=false"]
    cfg = compose_run(tmp_path / "a", [*fast, "stage.optimizer.fused=true"])
    run(cfg)
    saved = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] > 0
    assert [g["fused"] for g in saved["optimizer_states"][0]["param_groups"]] == [True]
    mixed = [*fast, "stage.optimizer.fused=true", "trainer.precision=bf16-mixed"]
    with pytest.raises(SetupError, match=r"fused=true with trainer.precision=bf16-mixed: .* clip"):
        run(compose_run(tmp_path / "b", mixed))
    alias = [*fast, "stage.optimizer.fused=true", "trainer.precision=bf16"]
    with pytest.raises(SetupError, match=r"optimizer.fused=true with trainer.precision=bf16:"):
        run(compose_run(tmp_path / "b", alias))
    run(compose_run(tmp_path / "c", [*mixed, "trainer.gradient_clip_val=null"]))
