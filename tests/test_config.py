"""Every config composes; mistakes fail at start with the key and what is valid."""

import subprocess
import sys
from pathlib import Path

import pytest

from pocketnet.cli import CONF_DIR
from pocketnet.config.checks import ConfigError, check_overrides

GROUPS = sorted(
    p.name
    for p in Path(CONF_DIR).iterdir()
    if p.is_dir() and p.name not in ("experiment", "debug", "hydra")
)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes(compose, group, option):
    cfg = compose([f"{group}={option}"])
    assert cfg.stage.name == (option if group == "stage" else "pipeline")
    assert cfg.data.resolution > 0


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_composes(compose, experiment):
    cfg = compose([f"experiment={experiment}"])
    assert experiment in cfg.tags


def test_default_is_the_quickstart_pipeline(compose):
    cfg = compose([])
    assert cfg.tags == ["quickstart"]
    assert (cfg.data.name, cfg.data.resolution, cfg.backbone.name) == ("synthetic", 48, "resnet18")
    assert cfg.head.m2 == 0.5 and cfg.head.s == 64.0
    assert (cfg.stage.name, cfg.kd.name, cfg.kd.schedule.offset) == ("pipeline", "multi_step", 1)
    student = cfg.stage.student_backbone
    assert student.timm_kwargs.channels == [16, 32, 64, 128]
    assert student.embedding_size == cfg.backbone.embedding_size == 128


def test_group_overrides_reach_the_pipeline_student(compose):
    cfg = compose(["backbone@stage.student_backbone=mobilefacenet", "resolution=r32"])
    assert cfg.stage.student_backbone.name == "mobilefacenet"
    assert cfg.stage.student_backbone.embedding_size == 128  # follows the teacher's
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
        ("stage.optimizer.name=adam", ["sgd, adamw"]),
        ("kd=embeding", ["'embeding'", "multi_step", "Did you mean 'embedding'"]),
        ("kd.loss=hinge", ["'kd.loss'"]),
        ("resolution=r40", ["'r40'", "r48"]),
    ],
)
def test_config_mistakes_name_the_key_and_what_is_valid(override, expected):
    with pytest.raises(ConfigError) as err:
        check_overrides(CONF_DIR, [override])
    for text in expected:
        assert text in str(err.value)


def test_sweeps_are_checked_on_their_first_value():
    check_overrides(CONF_DIR, ["head=arcface,cosface", "trainer.max_epochs=1,2"])
    with pytest.raises(ConfigError, match="max_epoch'"):
        check_overrides(CONF_DIR, ["trainer.max_epoch=1,2"])


def test_cli_typo_exits_2_with_one_line_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pocketnet", "trainer.max_epoch=3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "unknown config key 'trainer.max_epoch'" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "logs").exists()
