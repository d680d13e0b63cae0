"""pocketnet-eval and pocketnet-export on real checkpoints of real runs."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from pocketnet.config.store import beside_run
from pocketnet.data.cli import main as data_main
from pocketnet.data.sources import bin_verification_set
from pocketnet.data.transforms import FaceBatchTransform
from pocketnet.distill.teacher_bank import TeacherBank
from pocketnet.evaluation.app import evaluate_checkpoint, export_checkpoint
from pocketnet.evaluation.checkpoints import load_model
from pocketnet.evaluation.verification import VerificationResult, evaluate_verification
from pocketnet.models.ensemble import EmbeddingEnsemble
from pocketnet.models.factory import backbone_from_config
from pocketnet.run import run
from pocketnet.runtime import SetupError
from tests.conftest import LFW_DEV, compose_run, pocketnet_command

TEACHER = [
    "stage=teacher",
    "debug=fast",
    "data=tiny",
    "print_config=false",
    "callbacks.progress.rich=false",
    "backbone=resnet18_tiny",
    "backbone.embedding_size=32",
    "practical=true",
]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("teacher")
    cfg = compose_run(tmp, TEACHER)
    run(cfg)
    return Path(cfg.paths.output_dir)


def _eval(tmp_path: Path, overrides: list[str], out: str = "eval") -> dict:
    cfg = compose_run(tmp_path, overrides, "eval", out)
    return evaluate_checkpoint(cfg)


def test_eval_of_a_run_checkpoint_equals_its_validation_figures(teacher_run, tmp_path):
    metrics = _eval(
        tmp_path,
        [
            f"ckpt_path={teacher_run / 'checkpoints' / 'last.ckpt'}",
            "eval.save_embeddings=true",
            "logger=default",
        ],
    )
    logged = json.loads((teacher_run / "results.json").read_text())["metrics"]
    figures = metrics["sets"]["synthetic"]  # embedded by the fast copy, validated by the eager net
    assert set(figures) >= {"acc", "acc_std", "threshold", "auc"}
    for key, value in figures.items():
        assert value == pytest.approx(logged[f"val/synthetic/{key}"], abs=1e-6), key
    out = tmp_path / "eval"
    written = json.loads((out / "metrics.json").read_text())
    assert written["sets"] == metrics["sets"] and written["input_size"] == 32
    assert (out / "roc_synthetic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.load(out / "embeddings_synthetic.npy").shape == (80, 32)  # 40 pairs, flip-fused
    practical = json.loads((out / "practical.json").read_text())
    in_run = json.loads((teacher_run / "practical.json").read_text())  # written by the run
    assert practical["params"] == in_run["params"] == logged_params(teacher_run)
    assert practical["size onnx MB"] == pytest.approx(in_run["size onnx MB"], rel=0.01)
    assert practical["size fp16 MB"] < 0.6 * practical["size fp32 MB"]
    assert practical["latency ms p90"] >= practical["latency ms"] > 0
    (wandb_run,) = (out / "wandb").glob("offline-run-*")
    (table,) = (wandb_run / "files" / "media" / "table").glob("practical_*.table.json")
    assert json.loads(table.read_text())["columns"][:2] == ["input size", "params"]


def logged_params(run_dir: Path) -> int:
    return json.loads((run_dir / "results.json").read_text())["params"]


def test_export_then_eval_of_the_bare_backbone_gives_the_same_figures(teacher_run, tmp_path):
    ckpt = teacher_run / "checkpoints" / "last.ckpt"
    report = export_checkpoint(compose_run(tmp_path, [f"ckpt_path={ckpt}"], "export", "export"))
    out = tmp_path / "export"
    assert report["parity ok"] and max(report["max abs diff"].values()) <= 1e-4
    assert set(report["max abs diff"]) == {"1", "7"}
    graph = onnx.load(out / "backbone.onnx").graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a symbolic batch axis
    state = torch.load(out / "backbone_fp16.pth")
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())

    sets = [f"eval.sets=[{LFW_DEV / 'lfw_dev_test.bin'}]", "eval.practical=false"]
    from_ckpt = _eval(tmp_path, [f"ckpt_path={ckpt}", *sets], "a")
    bare = [
        f"ckpt_path={out / 'backbone.pth'}",
        "backbone=resnet18_tiny",
        "backbone.embedding_size=32",
        "input_size=32",
    ]
    from_file = _eval(tmp_path, [*bare, *sets], "b")
    assert from_file["sets"] == from_ckpt["sets"]
    assert 0.5 <= from_file["sets"]["lfw_dev_test"]["acc"] <= 1.0
    bank = TeacherBank(teacher_run / "teacher_bank")
    from_bank = _eval(tmp_path, [f"ckpt_path={bank.root / bank.entries()[-1].file}", *sets], "c")
    assert from_bank["sets"] == from_ckpt["sets"]  # the bank's last entry is the final state


def test_an_ensemble_embedding_is_a_unit_vector_whose_cosine_is_the_members_mean():
    torch.manual_seed(0)
    members = [nn.Linear(6, 4), nn.Linear(6, 3), nn.Linear(6, 5)]
    ensemble = EmbeddingEnsemble(members)
    a, b = torch.randn(8, 6), torch.randn(8, 6)
    with torch.no_grad():
        ea, eb = ensemble(a), ensemble(b)
        mean_cosine = torch.stack([F.cosine_similarity(m(a), m(b)) for m in members]).mean(0)
    torch.testing.assert_close(ea.norm(dim=1), torch.ones(8))
    torch.testing.assert_close((ea * eb).sum(dim=1), mean_cosine)


def test_an_ensemble_refuses_members_that_do_not_make_one_model(teacher_run, tmp_path):
    """Another input size, another colour order, an ONNX graph, a missing file: one line each."""
    last = teacher_run / "checkpoints" / "last.ckpt"
    run_cfg = OmegaConf.load(teacher_run / "config.yaml")
    at48 = tmp_path / "at48.pt"  # a teacher-bank file of the same net at 48 px
    model_config = {"backbone": OmegaConf.to_container(run_cfg.backbone), "input_size": 48}
    net48 = backbone_from_config(run_cfg.backbone, 48)
    torch.save({"model_config": model_config, "backbone": net48.state_dict()}, at48)
    bgr = tmp_path / "bgr"  # the same run, said to be trained on BGR faces
    (bgr / "checkpoints").mkdir(parents=True)
    shutil.copy(last, bgr / "checkpoints" / "last.ckpt")
    run_cfg.data.color = "bgr"
    OmegaConf.save(run_cfg, bgr / "config.yaml")
    for member, message in (
        (at48, r"ensemble members take different input sizes: .*last.ckpt 32 px, .*at48.pt 48 px"),
        (
            bgr / "checkpoints" / "last.ckpt",
            r"ensemble members were trained on different colour orders: .*last.ckpt rgb, "
            r".*bgr/checkpoints/last.ckpt bgr",
        ),
        (tmp_path / "g.onnx", r"eval.ensemble=.*g.onnx: an ONNX graph cannot join an ensemble"),
        (tmp_path / "none.ckpt", r"eval.ensemble=.*none.ckpt: no such file"),
    ):
        with pytest.raises(SetupError, match=message):
            _eval(tmp_path, [f"ckpt_path={last}", f"eval.ensemble=[{member}]"])


def _votes(paths: list[Path], bin_path: Path) -> VerificationResult:
    """The verification of nets' mean cosine vote, computed apart from EmbeddingEnsemble: each
    net's flip views L2-normalised and summed, the nets concatenated."""
    vset = bin_verification_set(bin_path)
    images = torch.stack([vset.dataset[i][0] for i in range(len(vset.dataset))])
    images = FaceBatchTransform("rgb", 32)(images)
    parts = []
    with torch.inference_mode():
        for path in paths:
            net = load_model(path).backbone
            parts += [F.normalize(net(images), dim=1) + F.normalize(net(images.flip(3)), dim=1)]
    return evaluate_verification(torch.cat(parts, dim=1), vset.issame)


def test_an_ensemble_is_one_model_of_its_members(teacher_run, tmp_path):
    """``eval.ensemble``: the members' mean cosine vote, each flip view normalised (a net with
    itself: that net's vote), its cost both nets'."""
    last = teacher_run / "checkpoints" / "last.ckpt"
    bank = TeacherBank(teacher_run / "teacher_bank")
    first = bank.root / bank.entries()[0].file
    test_bin = LFW_DEV / "lfw_dev_test.bin"
    sets = [f"eval.sets=[{test_bin}]", "eval.fast_inference=false"]
    last_alone = _votes([last], test_bin)
    for name, member, practical, expected in (
        ("twice", last, "false", last_alone),
        ("mixed", first, "true", _votes([last, first], test_bin)),
    ):
        overrides = [f"ckpt_path={last}", f"eval.ensemble=[{member}]", *sets]
        metrics = _eval(
            tmp_path, [*overrides, f"eval.practical={practical}", "eval.onnx=false"], name
        )
        figures = metrics["sets"]["lfw_dev_test"]
        assert figures["acc"] == pytest.approx(expected.accuracy, abs=1e-6), name
        assert figures["auc"] == pytest.approx(expected.auc, abs=1e-6), name
    assert metrics["model"] == "ensemble of resnet18 + resnet18"
    assert metrics["checkpoint"] == f"{last} + {first}"
    assert figures["auc"] != last_alone.auc  # not the last net alone
    run_practical = json.loads((teacher_run / "practical.json").read_text())
    assert metrics["practical"]["params"] == 2 * run_practical["params"]
    assert metrics["practical"]["MFLOPs"] == pytest.approx(2 * run_practical["MFLOPs"], rel=1e-6)


def test_int8_and_fp16_onnx_are_judged_beside_fp32(teacher_run, tmp_path):
    """``export.int8=true``: a static int8 QDQ graph calibrated on the run's faces, an fp16
    graph, and every format's accuracy on the run's sets (fp32 ONNX equals PyTorch's, which
    equals the run's own validation) and batch-1 latency."""
    ckpt = teacher_run / "checkpoints" / "last.ckpt"
    args = [f"ckpt_path={ckpt}", "export.int8=true", "export.calibration_images=40"]
    out = teacher_run / "export" / "int8"  # where pocketnet-export puts a run's exports
    report = export_checkpoint(compose_run(tmp_path, args, "export", str(out)))
    formats = report["formats"]
    assert list(formats) == ["pytorch fp32", "onnx fp32", "onnx fp16", "onnx int8"]
    assert formats["onnx int8"]["calibration images"] == 40
    graph = onnx.load(out / "backbone_int8.onnx").graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert formats["onnx int8"]["size MB"] < 0.4 * formats["onnx fp32"]["size MB"]
    assert formats["onnx fp16"]["size MB"] < 0.6 * formats["onnx fp32"]["size MB"]
    assert formats["onnx fp16"]["parity ok"] and report["parity ok"]
    logged = json.loads((teacher_run / "results.json").read_text())["sets"]["synthetic"]["acc"]
    assert formats["pytorch fp32"]["acc"]["synthetic"] == pytest.approx(logged, abs=1e-6)
    assert formats["onnx fp32"]["acc"]["synthetic"] == formats["pytorch fp32"]["acc"]["synthetic"]
    cosine = {name: f["cosine to fp32"]["synthetic"] for name, f in formats.items()}
    assert cosine["onnx fp32"] > 0.99999
    assert cosine["onnx fp16"] > 0.999 and 0.9 < cosine["onnx int8"] < cosine["onnx fp16"]
    assert all(f["latency ms"] > 0 for f in formats.values())
    assert json.loads((out / "export.json").read_text())["formats"]["onnx int8"]["size MB"] > 0

    # pocketnet-eval of each graph: the run's sets (found from the export folder), the same
    # figures; the practical metrics (of a PyTorch model) are refused by name
    for name, file in (("onnx int8", "backbone_int8.onnx"), ("onnx fp16", "backbone_fp16.onnx")):
        metrics = _eval(tmp_path, [f"ckpt_path={out / file}", "eval.practical=false"], file)
        assert metrics["sets"]["synthetic"]["acc"] == formats[name]["acc"]["synthetic"]
    with pytest.raises(SetupError, match="is an ONNX graph: the practical metrics"):
        _eval(tmp_path, [f"ckpt_path={out / 'backbone_int8.onnx'}"], "refused")


def test_int8_needs_a_run_to_calibrate_on(teacher_run, tmp_path):
    export_checkpoint(
        compose_run(
            tmp_path,
            [
                f"ckpt_path={teacher_run / 'checkpoints' / 'last.ckpt'}",
                "export.accuracy=false",
                "export.latency=false",
            ],
            "export",
            "e1",
        )
    )
    bare = [
        f"ckpt_path={tmp_path / 'e1' / 'backbone.pth'}",
        "backbone=resnet18_tiny",
        "backbone.embedding_size=32",
        "input_size=32",
        "export.int8=true",
    ]
    with pytest.raises(SetupError, match="export.int8=true calibrates on the run's training"):
        export_checkpoint(compose_run(tmp_path, bare, "export", "e2"))


def test_a_foreign_or_broken_onnx_file_is_refused_by_name(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    foreign = tmp_path / "w600k.onnx"
    torch.onnx.export(
        net,
        (torch.zeros(1, 3, 8, 8),),
        str(foreign),
        dynamo=False,
        input_names=["data"],
        output_names=["fc1"],
    )
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph")
    for path, message in (
        (foreign, "a pocketnet-export graph expected"),
        (broken, "ONNX Runtime cannot load it"),
    ):
        with pytest.raises(SetupError, match=message):
            _eval(tmp_path, [f"ckpt_path={path}", "eval.practical=false"], path.stem)


def test_template_evaluation_on_lfw_dev_templates(teacher_run, tmp_path, capsys):
    assert (
        data_main(["make-templates", "--images", str(LFW_DEV / "test"), "--out", str(tmp_path)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "947 images in 722 templates" in printed and "10,361 pairs (361 same" in printed
    meta, pairs = tmp_path / "lfw_face_tid_mid.txt", tmp_path / "lfw_template_pair_label.txt"
    entry = f"{{meta:'{meta}',pairs:'{pairs}',images:'{LFW_DEV / 'test'}'}}"
    ckpt = teacher_run / "checkpoints" / "last.ckpt"
    metrics = _eval(
        tmp_path,
        [f"ckpt_path={ckpt}", f"eval.templates=[{entry}]", "eval.practical=false", "logger=csv"],
    )
    figures = metrics["templates"]["lfw"]
    assert (figures["templates"], figures["pairs"]) == (722, 10_361)
    assert 0.0 <= figures["tar@far=1e-3"] <= figures["tar@far=1e-2"] <= 1.0
    assert 0.5 < figures["auc"] <= 1.0
    assert (tmp_path / "eval" / "roc_lfw.png").is_file()
    logged = (tmp_path / "eval" / "csv" / "metrics.csv").read_text()
    assert "eval/templates/lfw/auc" in logged


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ckpt_path=/no/such.ckpt"], "no such file"),
        (["ckpt_path=BACKBONE"], "bare backbone state_dict: name its net with backbone="),
        (
            ["ckpt_path=BACKBONE", "backbone=mobilefacenet", "input_size=32"],
            "do not fit backbone mobilefacenet at input size 32",
        ),
        (["ckpt_path=LAST", "input_size=48"], "holds a model for 32 px"),
    ],
)
def test_eval_errors_name_the_file_and_the_fix(teacher_run, tmp_path, overrides, message):
    backbone = tmp_path / "backbone.pth"
    state = torch.load(teacher_run / "checkpoints" / "last.ckpt", weights_only=False)
    torch.save(
        {k[9:]: v for k, v in state["state_dict"].items() if k.startswith("backbone.")}, backbone
    )
    last = teacher_run / "checkpoints" / "last.ckpt"
    overrides = [o.replace("BACKBONE", str(backbone)).replace("LAST", str(last)) for o in overrides]
    with pytest.raises(SetupError, match=message):
        _eval(tmp_path, overrides)


def test_eval_cli_reports_a_missing_checkpoint_in_one_line(tmp_path, capfd):
    args = ["ckpt_path=/no/such.ckpt", f"paths.root_dir={tmp_path}"]
    assert pocketnet_command(tmp_path, args, "pocketnet-eval") == 2
    err = capfd.readouterr().err
    assert err.strip().splitlines()[-1] == "error: ckpt_path=/no/such.ckpt: no such file"
    assert "Traceback" not in err


def test_eval_cli_writes_into_the_run_folder_of_its_checkpoint(teacher_run, tmp_path):
    ckpt = teacher_run / "checkpoints" / "last.ckpt"
    args = [f"ckpt_path={ckpt}", "eval.practical=false", f"paths.root_dir={tmp_path}"]
    assert pocketnet_command(tmp_path, args, "pocketnet-eval") == 0
    (out,) = (teacher_run / "eval").iterdir()
    assert (out / "metrics.json").is_file() and (out / "roc_synthetic.png").is_file()
    assert not (tmp_path / "logs").exists()
    # a file outside a run folder: logs/<task>/runs/<time>
    assert beside_run(str(tmp_path / "backbone.pth"), "eval", "/L").startswith("/L/eval/runs/20")
