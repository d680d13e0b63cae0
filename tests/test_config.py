"""Every config composes; mistakes fail at start with the key and what is valid."""

import sys
from enum import Enum
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from pocketnet.config.checks import ConfigError, check_overrides
from pocketnet.config.compose import CONF_DIR
from pocketnet.run import run
from pocketnet.runtime import SetupError
from tests.conftest import compose_run, pocketnet_command

GROUPS = sorted(
    p.name
    for p in Path(CONF_DIR).iterdir()
    if p.is_dir() and p.name not in ("experiment", "debug", "hydra")
)
# groups chosen inside a stage's config, overridden at their package
MOUNTED = {"optimizer": "stage.optimizer", "scheduler": "stage.scheduler"}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def _own_values(path: Path) -> dict[str, object]:
    """An option file's own plain values by dotted key (no defaults list, ``hydra`` node,
    interpolations or mandatory ``???``)."""
    own = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    own.pop("defaults", None)
    own.pop("hydra", None)  # Hydra's own settings, not the run's config
    out: dict[str, object] = {}

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        elif not (isinstance(node, str) and ("${" in node or node == "???")):
            out[prefix] = node

    walk(own, "")
    return out


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes_with_its_own_values(compose, group, option):
    key = f"{group}@{MOUNTED[group]}" if group in MOUNTED else group
    cfg = compose([f"{key}={option}"])
    path = Path(CONF_DIR) / group / f"{option}.yaml"
    glob = "@package _global_" in path.read_text()
    node = cfg if glob else OmegaConf.select(cfg, MOUNTED.get(group, group))
    for leaf, value in _own_values(path).items():  # what the option file says is what the run gets
        got = OmegaConf.select(node, leaf, throw_on_missing=False)
        assert (got.name if isinstance(got, Enum) else got) == value, leaf
    assert cfg.stage.name == (option if group == "stage" else "teacher")


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_composes(compose, experiment):
    cfg = compose([f"experiment={experiment}"])
    assert experiment in cfg.tags


def test_defaults_are_neutral(compose):
    cfg = compose(["data=rec", "data.root=/data/ms1mv2", "backbone=iresnet100", "trainer=gpu"])
    assert (cfg.stage.name, cfg.kd.name, cfg.tags) == ("teacher", "none", [])
    assert (cfg.data.resolution, cfg.trainer.max_epochs, cfg.backbone.name) == (
        112,
        20,
        "iresnet100",
    )
    assert cfg.stage.optimizer.lr == 0.1 and cfg.stage.scheduler.warmup_epochs == 0.0


def test_the_quickstart_preset_is_the_pipeline(compose):
    cfg = compose(["experiment=quickstart"])
    assert cfg.tags == ["quickstart"]
    assert (cfg.data.name, cfg.data.resolution, cfg.backbone.name) == ("synthetic", 48, "resnet18")
    assert cfg.head.m2 == 0.5 and cfg.head.s == 64.0
    assert (cfg.stage.name, cfg.kd.name, cfg.kd.schedule.offset) == ("pipeline", "multi_step", 1)
    student = cfg.stage.student_backbone
    assert student.timm_kwargs.channels == [16, 32, 64, 128]
    assert student.embedding_size == cfg.backbone.embedding_size == 128


def test_group_overrides_reach_the_pipeline_student(compose):
    cfg = compose(
        ["stage=pipeline", "backbone@stage.student_backbone=mobilefacenet", "resolution=r32"]
    )
    assert cfg.stage.student_backbone.name == "mobilefacenet"
    assert cfg.stage.student_backbone.embedding_size == cfg.backbone.embedding_size == 512
    assert cfg.resolution.student == 32


def test_debug_preset_shrinks_the_run(compose):
    cfg = compose(["debug=fast"])
    assert cfg.trainer.limit_train_batches == 3
    assert cfg.logger.wandb is None and cfg.logger.csv is not None


@pytest.mark.parametrize(
    "override,expected",
    [
        (
            "trainer.max_epoch=3",
            ["'trainer.max_epoch'", "max_epochs", "Did you mean 'trainer.max_epochs'"],
        ),
        (
            "stage.optimizer.lrr=0.1",
            ["'stage.optimizer.lrr'", "Valid keys in 'stage.optimizer'", "lr"],
        ),
        ("seeed=1", ["'seeed'", "the top level", "Did you mean 'seed'"]),
        ("backbone=resnt18", ["'resnt18'", "'backbone'", "resnet50", "Did you mean 'resnet18'"]),
        ("head=arcfce", ["'arcfce'", "cosface", "softmax"]),
        ("trainer.max_epochs=abc", ["'trainer.max_epochs'", "'abc'", "Integer"]),
        ("data.color=grey", ["'data.color'", "rgb, bgr"]),
        ("optimizer@stage.optimizer=adam", ["'adam'", "'optimizer'", "adamw, sgd"]),
        ("stage.optimizer.betas=[0.9,0.99]", ["'stage.optimizer.betas'", "momentum"]),
        ("data=rec", ["'data.root' needs a value"]),
        ("kd=embeding", ["'embeding'", "multi_step", "Did you mean 'embedding'"]),
        ("kd.loss=hinge", ["'kd.loss'"]),
        ("resolution=r40", ["'r40'", "r48"]),
        ("trainer.max_epochs=-2", ["trainer.max_epochs=-2 cannot be used", ">= 1"]),
        ("trainer.max_epochs=0", ["trainer.max_epochs=0 cannot be used"]),
        ("stage.optimizer.lr=-0.1", ["stage.optimizer.lr=-0.1", "finite number > 0"]),
        ("stage.optimizer.lr=nan", ["stage.optimizer.lr=nan", "finite number > 0"]),
        ("data.batch_size=0", ["data.batch_size=0", ">= 1"]),
        ("data.resolution=7", ["data.resolution=7", ">= 16 pixels"]),
        ("head.label_smoothing=1.0", ["head.label_smoothing=1.0", "in [0, 1)"]),
    ],
)
def test_config_mistakes_name_the_key_and_what_is_valid(override, expected):
    with pytest.raises(ConfigError) as err:
        check_overrides([override])
    for text in expected:
        assert text in str(err.value)


def test_sweeps_are_checked_on_their_first_value():
    check_overrides(["head=arcface,cosface", "trainer.max_epochs=1,2"])
    with pytest.raises(ConfigError, match="max_epoch'"):
        check_overrides(["trainer.max_epoch=1,2"])


@pytest.mark.parametrize(
    "override",
    [
        "stage.optimizer.lr=interval(0.01,0.1)",
        "stage.optimizer.lr=tag(log, interval(0.001, 0.1))",
        "seed=interval(1,4)",
        "seed=range(1,4)",
        "seed=shuffle(range(1,4))",
        "head=choice(arcface,cosface)",
        "head=glob(*)",
    ],
)
def test_every_sweeper_grammar_is_accepted(override):
    check_overrides([override])


def test_every_option_of_a_group_sweep_is_checked_and_interval_keys_too():
    with pytest.raises(ConfigError, match="unknown option 'cosfac'.*Did you mean 'cosface'"):
        check_overrides(["head=choice(arcface,cosfac)"])
    with pytest.raises(ConfigError, match="unknown config key 'stage.optimizer.lrr'"):
        check_overrides(["stage.optimizer.lrr=interval(0.01,0.1)"])
    with pytest.raises(ConfigError, match=r"stage.optimizer.lr=-0.1 .*finite number > 0"):
        check_overrides(["stage.optimizer.lr=interval(-0.1,0.1)"])


def test_cli_typo_exits_2_with_one_line_and_no_traceback(tmp_path, capfd):
    assert pocketnet_command(tmp_path, ["trainer.max_epoch=3"]) == 2
    out, err = capfd.readouterr()
    assert "unknown config key 'trainer.max_epoch'" in err
    assert "Traceback" not in out + err
    assert not (tmp_path / "logs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")
@pytest.mark.parametrize("override", ["trainer=gpu", "trainer=ddp"])
def test_a_gpu_trainer_without_a_gpu_is_one_line_before_any_work(tmp_path, override):
    cfg = compose_run(tmp_path, ["stage=teacher", "debug=fast", "data=tiny", override])
    with pytest.raises(SetupError, match=r"accelerator=gpu .* 0 CUDA GPU\(s\); use trainer=cpu"):
        run(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not (tmp_path / "cache").exists()  # the tiny faces were not even made


@pytest.mark.parametrize(
    "args,quickstart",
    [
        ([], True),
        (["--cfg", "job"], True),
        (
            ["stage=teacher", "data=rec", "data.root=X", "backbone=iresnet100", "--cfg", "job"],
            False,
        ),
    ],
)
def test_bare_pocketnet_is_the_quickstart_and_any_override_is_neutral(
    monkeypatch, capsys, args, quickstart
):
    from pocketnet import cli

    monkeypatch.setattr(sys, "argv", ["pocketnet", *args])
    launched = []
    monkeypatch.setattr(cli, "_launch", lambda name, job: launched.append(sys.argv[1:]))
    cli.main()
    assert launched == [[*args, "experiment=quickstart"] if quickstart else args]
    notice = capsys.readouterr().err
    assert ("running the quickstart (experiment=quickstart)" in notice) == quickstart


def test_version_help_and_resolved_config(capsys, tmp_path):
    from pocketnet import __version__

    def _cli(*args: str, command: str = "pocketnet") -> tuple[int, str]:
        return pocketnet_command(tmp_path, list(args), command), capsys.readouterr().out

    code, out = _cli("--version")
    assert code == 0 and out.startswith(f"pocketnet {__version__} (hydra-core 1.3")

    code, out = _cli("--help")
    groups = out.split("== Config groups (group=option) ==")[1].split("== Config")[0]
    assert "schema" not in groups
    kd_options = "adadistill, adversarial, ekd, embedding, multi_step, none, rkd"
    assert f"kd                         {kd_options}" in groups
    assert "optimizer@stage.optimizer  adamw, sgd" in groups
    code, out = _cli("--help", command="pocketnet-eval")
    assert "conf/eval.yaml" in out and "\nkd " not in out

    code, out = _cli("stage=teacher", "--cfg", "job", "--resolve")
    resolved = OmegaConf.create(out)
    assert resolved.paths.output_dir == "<the run folder, made when the job starts>"
    assert resolved.paths.log_dir == str(tmp_path / "logs")
    assert not (tmp_path / "logs").exists()
