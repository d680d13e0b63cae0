"""The search stage: mixed ops, genotype derivation, the second-order gradient, split, runs."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import wandb

from pocketnet.evaluation.checkpoints import load_model
from pocketnet.models.factory import backbone_from_config
from pocketnet.models.pocketnet.genotype import load_genotype, parse_genotype
from pocketnet.models.pocketnet.network import PocketNet
from pocketnet.models.pocketnet.ops import PRIMITIVES, make_op
from pocketnet.run import run
from pocketnet.runtime import SetupError
from pocketnet.search.architect import alpha_gradients, kept_buffers
from pocketnet.search.data import identity_split
from pocketnet.search.supernet import MixedOp, SuperNet, alpha_entropy, derive_gene
from pocketnet.stages.search import SearchModule
from tests.conftest import compose_run

SEARCH = [
    "stage=search",
    "head=softmax",
    "debug=fast",
    "data=tiny",
    "print_config=false",
    "callbacks.progress.rich=false",
    "stage.supernet.C=4",
    "stage.supernet.n_cells=3",
    "stage.supernet.width=32",
    "stage.supernet.gdc_groups=8",
    "stage.supernet.embedding_size=16",
    "stage.derived.C=4",
    "stage.derived.n_cells=3",
]


def _tiny_supernet(**kw) -> SuperNet:
    args = dict(C=2, n_cells=3, n_nodes=2, stem_multiplier=2, embedding_size=8, input_size=32)
    return SuperNet(**{**args, "width": 8, "gdc_groups": 4, **kw})


def test_mixed_op_is_the_alpha_weighted_sum_of_its_eight_ops():
    torch.manual_seed(0)
    for stride in (1, 2):
        mixed = MixedOp(4, stride).eval()
        x = torch.randn(2, 4, 8, 8)
        w = F.softmax(torch.randn(len(PRIMITIVES)), dim=0)
        expected = sum(w[k] * op(x) for k, op in enumerate(mixed.ops))
        torch.testing.assert_close(mixed(x, w), expected)
        assert mixed(x, w).shape == (2, 4, 8 // stride, 8 // stride)
        # the same eight operations as a final net's edges, BN without affine parameters
        names = [type(make_op(p, 4, stride)).__name__ for p in PRIMITIVES]
        assert [type(op).__name__ for op in mixed.ops] == names
    assert not [n for n, _ in mixed.named_parameters() if "bn" in n or "net.3" in n]


def test_supernet_matches_the_paper_layout():
    net = SuperNet()  # C=16, 8 cells, 4 nodes, stem 3 -> 48, 128-d, GDC grouped 128
    assert net.stem[0].out_channels == 48
    assert [i for i, c in enumerate(net.cells) if c.reduction] == [2, 5, 7]
    assert [tuple(a.shape) for a in net.alpha_normal] == [(2, 8), (3, 8), (4, 8), (5, 8)]
    assert [tuple(a.shape) for a in net.alpha_reduce] == [(2, 8), (3, 8), (4, 8), (5, 8)]
    assert max(a.abs().max().item() for a in net.alphas()) < 1e-2  # 1e-3 * N(0, 1)
    assert net.tail[4].groups == 128 and net.tail[4].kernel_size == (7, 7)
    cell_bn = [m for m in net.cells.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert cell_bn and not any(m.affine for m in cell_bn)
    alpha_ids = {id(a) for a in net.alphas()}
    assert not alpha_ids & {id(p) for p in net.weights()}
    n_weights = sum(p.numel() for p in net.weights())
    assert n_weights + sum(a.numel() for a in net.alphas()) == sum(
        p.numel() for p in net.parameters()
    )
    assert n_weights == 2_792_528  # every op of every edge, the GDC head
    with torch.no_grad():
        assert net.eval()(torch.zeros(2, 3, 112, 112)).shape == (2, 128)


def test_genotype_derivation_on_hand_set_alphas():
    none = PRIMITIVES.index("none")
    node0 = np.full((2, 8), 0.05)
    node0[0, none] = 0.6  # none is strongest on this edge but never chosen
    node0[0, PRIMITIVES.index("dw_conv_5x5")] = 0.3
    node0[1, PRIMITIVES.index("skip_connect")] = 0.2
    node1 = np.full((3, 8), 0.05)
    node1[0, PRIMITIVES.index("max_pool_3x3")] = 0.1
    node1[1, PRIMITIVES.index("dw_conv_3x3")] = 0.5
    node1[2, PRIMITIVES.index("avg_pool_3x3")] = 0.4
    gene = derive_gene([node0, node1])
    assert gene == [
        [("dw_conv_5x5", 0), ("skip_connect", 1)],
        [("dw_conv_3x3", 1), ("avg_pool_3x3", 2)],  # top-2 edges; the weak edge 0 dropped
    ]
    with pytest.raises(ValueError, match=r"node 1: edge weights of shape \(2, 8\)"):
        derive_gene([node0, node0])


def test_supernet_genotype_builds_a_pocketnet():
    torch.manual_seed(0)
    net = _tiny_supernet(n_nodes=4)
    with torch.no_grad():
        for a in net.alphas():
            a.normal_()
    genotype = parse_genotype(net.genotype().to_darts_string())
    assert len(genotype.normal) == 4 and genotype.normal_concat == (2, 3, 4, 5)
    assert all(op != "none" for node in genotype.normal + genotype.reduce for op, _ in node)
    assert all(len(node) == 2 for node in genotype.normal)


def _second_order_case():
    torch.manual_seed(0)
    net = _tiny_supernet().double()
    head = torch.nn.Linear(8, 5).double()
    with torch.no_grad():
        for a in net.alphas():
            a.normal_(0, 0.5)
    batches = [(torch.randn(6, 3, 32, 32, dtype=torch.double), torch.randint(0, 5, (6,)))]
    batches.append((torch.randn(6, 3, 32, 32, dtype=torch.double), torch.randint(0, 5, (6,))))
    weights = [*net.weights(), *head.parameters()]
    bufs = [0.1 * torch.randn_like(w) for w in weights]

    def loss(i):
        return lambda: F.cross_entropy(head(net(batches[i][0])), batches[i][1])

    return net, weights, bufs, loss(0), loss(1)


def test_second_order_alpha_gradient_matches_finite_differences():
    net, weights, bufs, train_loss, val_loss = _second_order_case()
    alphas = net.alphas()
    xi, momentum, decay = 0.05, 0.9, 3e-4
    before = [w.detach().clone() for w in weights]
    with kept_buffers(net):
        stats = [b.clone() for b in net.buffers()]
        grads, _ = alpha_gradients(
            train_loss, val_loss, weights, alphas, xi, bufs, momentum, decay, eps_scale=1e-6
        )
        assert any(not torch.equal(a, b) for a, b in zip(net.buffers(), stats, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(net.buffers(), stats, strict=True))
    assert all(torch.equal(w, b) for w, b in zip(weights, before, strict=True))

    def unrolled_val_loss() -> float:  # L_val(w - xi * (m * buf + grad L_train + wd * w), alpha)
        g = torch.autograd.grad(train_loss(), weights)
        with torch.no_grad():
            for w, w0, gw, b in zip(weights, before, g, bufs, strict=True):
                w.copy_(w0 - xi * (momentum * b + gw + decay * w0))
            value = val_loss().item()
            for w, w0 in zip(weights, before, strict=True):
                w.copy_(w0)
        return value

    numeric = []
    h = 1e-5
    for alpha in alphas:
        flat = alpha.data.view(-1)
        for i in range(flat.numel()):
            flat[i] += h
            up = unrolled_val_loss()
            flat[i] -= 2 * h
            down = unrolled_val_loss()
            flat[i] += h
            numeric.append((up - down) / (2 * h))
    numeric = torch.tensor(numeric, dtype=torch.double)
    estimate = torch.cat([g.reshape(-1) for g in grads])
    first_order = torch.cat([g.reshape(-1) for g in torch.autograd.grad(val_loss(), alphas)])
    assert (estimate - numeric).norm() / numeric.norm() < 1e-6
    assert (first_order - numeric).norm() / numeric.norm() > 0.1  # the unrolled term matters
    first, _ = alpha_gradients(None, val_loss, weights, alphas)
    torch.testing.assert_close(torch.cat([g.reshape(-1) for g in first]), first_order)


def test_identity_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(50), np.arange(1, 51))  # identities with 1..50 images
    w, a = identity_split(labels, 0.5, seed=3)
    assert len(np.intersect1d(w, a)) == 0 and len(w) + len(a) == len(labels)
    for identity in range(50):
        n_w, n = (labels[w] == identity).sum(), identity + 1
        assert n_w == (1 if n == 1 else min(max(1, round(n * 0.5)), n - 1))
    assert set(labels[a]) == set(range(1, 50))  # every identity with 2+ images in both halves
    again, _ = identity_split(labels, 0.5, seed=3)
    other, _ = identity_split(labels, 0.5, seed=4)
    assert np.array_equal(w, again) and not np.array_equal(w, other)
    with pytest.raises(ValueError, match="weight_fraction must be in"):
        identity_split(labels, 1.0)


def test_alpha_entropy_is_one_when_undecided_and_zero_when_decided():
    uniform = [np.full((2, 8), 1 / 8), np.full((3, 8), 1 / 8)]
    assert alpha_entropy(uniform) == pytest.approx(1.0)
    decided = [np.eye(8)[:2], np.eye(8)[2:5]]
    assert alpha_entropy(decided) == pytest.approx(0.0, abs=1e-12)
    half = np.zeros((1, 8))
    half[0, :2] = 0.5  # log 2 / log 8 on this edge, 0 on the decided one
    assert alpha_entropy([np.vstack([half, np.eye(8)[:1]])]) == pytest.approx(1 / 6)
    # search_lfw's normal cell after its 10 epochs (0.09-0.16 where uniform is 0.125)
    row = np.array([0.108, 0.128, 0.135, 0.124, 0.136, 0.134, 0.112, 0.122])
    assert 0.99 < alpha_entropy([row[None] / row.sum()]) < 1.0


def test_search_run_writes_the_best_genotype_that_then_builds_and_trains(tmp_path, capfd):
    cfg = compose_run(tmp_path, [*SEARCH, "logger=default", "callbacks.progress.line_every_s=0"])
    row = run(cfg)
    out = Path(cfg.paths.output_dir)
    # piped progress: the weights' images a second (a batch is {"weights": ..., "arch": ...})
    lines = [x for x in capfd.readouterr().out.splitlines() if "  step " in x]
    assert len(lines) == 2 * 2 and all(int(x.split(" img/s")[0].split()[-1]) > 0 for x in lines)
    (wandb_run,) = (out / "wandb").glob("offline-run-*")
    media = list((wandb_run / "files" / "media").rglob("*.png"))
    assert len(media) == 2 * 3  # heat-map, normal and reduce cell, each epoch
    assert wandb.run is None  # finished: the next run in this process starts its own
    history = json.loads((out / "search" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    best = max(history, key=lambda h: (h["val/top1"], -h["epoch"]))
    assert row.about["best epoch"] == best["epoch"] and row.about["best top1"] == best["val/top1"]
    assert (out / "genotype.txt").read_text().strip() == best["genotype"]
    genotype = load_genotype(out / "genotype.yaml")
    assert genotype == parse_genotype(best["genotype"])
    for name in ("alphas.png", "alphas.npz", "normal.png", "reduce.png"):
        assert (out / "search" / "epoch_001" / name).stat().st_size > 1000
    assert (out / "genotype_normal.png").is_file() and (out / "genotype_reduce.png").is_file()
    alphas = np.load(out / "search" / "epoch_001" / "alphas.npz")
    assert sorted(alphas) == [f"{k}_{i}" for k in ("normal", "reduce") for i in range(4)]
    assert not np.allclose(alphas["normal_0"], 1 / 8, atol=1e-4)  # the alphas were trained
    for kind in ("normal", "reduce"):  # how undecided: from the saved alphas, in the record
        saved = alpha_entropy([alphas[f"{kind}_{i}"] for i in range(4)])
        assert history[1][f"alpha_entropy_{kind}"] == pytest.approx(saved)
        assert row.about[f"alpha entropy {kind}"] == best[f"alpha_entropy_{kind}"]
        assert 0.9 < saved < 1.0  # two tiny epochs: still close to where it started
    with open(out / "csv" / "metrics.csv") as f:  # and logged, each epoch
        logged = [r for r in csv.DictReader(f) if r.get("search/alpha_entropy_normal")]
    assert [float(r["search/alpha_entropy_normal"]) for r in logged] == pytest.approx(
        [h["alpha_entropy_normal"] for h in history]
    )
    derived = PocketNet(4, 3, 128, genotype, 32)  # stage.derived at the data's resolution
    assert row.about["derived params"] == sum(p.numel() for p in derived.parameters())
    assert row.about["genotype"] == str(out / "genotype.yaml")

    teacher = compose_run(
        tmp_path / "train",
        [
            "stage=teacher",
            "debug=fast",
            "data=tiny",
            "print_config=false",
            "callbacks.progress.rich=false",
            "backbone=pocketnet",
            f"backbone.genotype={out / 'genotype.yaml'}",
            "backbone.C=4",
            "backbone.n_cells=3",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=1",
        ],
    )
    run(teacher)
    net = backbone_from_config(teacher.backbone, 32)
    assert net.genotype == genotype
    state = torch.load(
        Path(teacher.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True
    )["state_dict"]
    net.load_state_dict({k[9:]: v for k, v in state.items() if k.startswith("backbone.")})


def test_search_resumes_with_its_record(tmp_path):
    cfg = compose_run(tmp_path, [*SEARCH, "trainer.max_epochs=1", "stage.order=first"])
    run(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    saved_alpha = state["state_dict"]["backbone.alpha_normal.0"]
    (key,) = [k for k in state["callbacks"] if "SearchRecorder" in k]
    record = state["callbacks"][key]  # as a search from before the alpha entropy wrote it
    for entry in [*record["history"], record["best"]]:  # best: one of them (or a copy)
        for kind in ("normal", "reduce"):
            entry.pop(f"alpha_entropy_{kind}", None)
    record["best"]["val/top1"] = 2.0  # above any top-1: the older epoch 0 stays the kept one
    older = tmp_path / "older.ckpt"
    torch.save(state, older)
    resumed = compose_run(
        tmp_path / "resumed",
        [*SEARCH, "trainer.max_epochs=2", "stage.order=first", f"ckpt_path={older}"],
    )
    row = run(resumed)
    out = Path(resumed.paths.output_dir)
    history = json.loads((out / "search" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]  # epoch 0 comes from the checkpoint
    assert "alpha_entropy_normal" not in history[0] and "alpha_entropy_normal" in history[1]
    assert row.about["best epoch"] == 0  # the table has no entropy: its kept epoch has none
    assert not any(k.startswith("alpha entropy") for k in row.about)
    final = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] > state["global_step"]
    assert final["optimizer_states"][1]["state"][0]["step"] == 2 * 2  # Adam: 2 steps an epoch
    assert not torch.equal(final["state_dict"]["backbone.alpha_normal.0"], saved_alpha)
    assert (out / "genotype.yaml").is_file()  # the resumed record's best, written at start
    with pytest.raises(ValueError, match="a search checkpoint .* backbone=pocketnet"):
        load_model(out / "checkpoints" / "last.ckpt")
    # the Lightning way: the supernet and its head rebuilt from the saved hyperparameters
    module = SearchModule.load_from_checkpoint(out / "checkpoints" / "last.ckpt")
    for key, value in module.state_dict().items():
        assert torch.equal(value, final["state_dict"][key]), key
    assert module.arch_cfg.lr == 1.2e-3 and module.order.value == "first"


def test_search_refuses_second_order_without_sgd(tmp_path):
    cfg = compose_run(tmp_path, [*SEARCH, "stage.optimizer.name=adamw"])
    with pytest.raises(SetupError, match="stage.order=second unrolls an SGD step"):
        run(cfg)


def test_search_presets_carry_the_paper_settings(compose):
    cfg = compose(["experiment=search_casia"])
    s = cfg.stage
    assert (s.name, s.order, cfg.head.name, cfg.data.resolution) == (
        "search",
        "second",
        "softmax",
        112,
    )
    assert (s.supernet.C, s.supernet.n_cells, s.supernet.stem_multiplier) == (16, 8, 3)
    assert (s.supernet.embedding_size, s.supernet.gdc_groups, s.split.weight_fraction) == (
        128,
        128,
        0.5,
    )
    assert (s.optimizer.lr, s.optimizer.momentum, s.optimizer.weight_decay) == (0.1, 0.9, 3e-4)
    assert s.optimizer.lr * s.scheduler.min_lr_factor == pytest.approx(0.004)
    assert (s.arch_optimizer.lr, list(s.arch_optimizer.betas)) == (1.2e-3, [0.5, 0.999])
    assert (cfg.data.batch_size, cfg.trainer.max_epochs, cfg.trainer.gradient_clip_val) == (
        128,
        50,
        5,
    )
    assert cfg.callbacks.checkpoint.monitor == "val/top1"
    assert compose(["stage=teacher"]).callbacks.checkpoint.monitor == "val/acc"


def test_pack_labels_come_from_identity_ranges_and_split_real_faces(tmp_path):
    from pocketnet.data.face_rec import rec_dataset
    from tests.conftest import LFW_DEV

    dataset, num_classes = rec_dataset(LFW_DEV)
    labels = dataset.labels
    read = [dataset.source.read(i)[1] for i in range(0, len(dataset), 7)]
    assert labels[::7].tolist() == read
    assert len(labels) == 6671 and len(np.unique(labels)) == num_classes == 1184
    w, a = identity_split(labels)
    singles = np.flatnonzero(np.bincount(labels) == 1)
    assert set(np.unique(labels[w])) == set(range(1184))
    assert set(np.unique(labels[a])) == set(range(1184)) - set(singles)
