"""PocketNet: paper sizes and FLOPs, official state_dict layout, timm, genotypes."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch import nn

import pocketnet  # noqa: F401  (registers the timm names)
from pocketnet.evaluation.flops import count_flops_detailed
from pocketnet.models.base import final_map_size
from pocketnet.models.pocketnet import Genotype, PocketNet, build_pocketnet, load_genotype
from pocketnet.models.pocketnet.genotype import parse_genotype
from pocketnet.models.pocketnet.network import reduction_cells
from pocketnet.models.pocketnet.ops import FactorizedReduce, make_op

STATE_DICTS = Path(__file__).resolve().parents[1].parent / "shared" / "spec" / "state_dicts"

FACE_STRING = (
    "Genotype(normal=[[('dw_conv_3x3', 0), ('dw_conv_1x1', 1)], [('dw_conv_3x3', 2), "
    "('dw_conv_5x5', 0)], [('dw_conv_3x3', 3), ('dw_conv_3x3', 0)], [('dw_conv_3x3', 4), "
    "('skip_connect', 0)]], normal_concat=range(2, 6), reduce=[[('dw_conv_3x3', 1), "
    "('dw_conv_7x7', 0)], [('skip_connect', 2), ('dw_conv_5x5', 1)], [('max_pool_3x3', 0), "
    "('skip_connect', 2)], [('max_pool_3x3', 0), ('max_pool_3x3', 1)]], reduce_concat=range(2, 6))"
)


def _official_layout(name: str) -> list[tuple[str, tuple[int, ...], str]]:
    rows = []
    for line in (STATE_DICTS / f"pocketnet_official_{name}.txt").read_text().splitlines():
        key, shape, dtype = line.split("\t")
        dims = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
        rows.append((key, dims, dtype))
    return rows


# (preset, overrides, parameters, FLOPs at 112 x 112, MFLOPs of the paper table)
PAPER = [
    ("pocketnet_s_128", {}, 925_632, 587_110_016, 587.11),
    ("pocketnet_s_256", {}, 991_424, 587_241_344, 587.24),
    ("pocketnet_m_128", {}, 1_686_656, 1_099_024_384, 1099.02),
    ("pocketnet_m_256", {}, 1_752_448, 1_099_155_712, 1099.16),
    ("pocketnet_s_128", {"genotype": "cifar10"}, 885_184, 620_928_640, 620.93),
]


@pytest.mark.parametrize(("preset", "overrides", "params", "flops", "mflops"), PAPER)
def test_presets_match_the_paper_sizes_and_flops(preset, overrides, params, flops, mflops):
    model = build_pocketnet(preset, **overrides)
    assert sum(p.numel() for p in model.parameters()) == params
    measured = count_flops_detailed(model, 112)
    assert measured == flops
    assert round(measured / 1e6, 2) == mflops


def test_the_genotype_searched_on_lfw_dev_is_built_in_as_its_search_wrote_it():
    """``genotype=lfw_dev``: experiment=search_lfw's genotype (its record in experiments/results),
    a PocketNetS-128 of its own size (no pooling in its normal cell: larger than the face one)."""
    record = Path(__file__).parents[1] / "experiments/results/search_lfw/genotype.yaml"
    assert load_genotype("lfw_dev") == load_genotype(record)
    model = build_pocketnet("pocketnet_s_128", genotype="lfw_dev")
    assert sum(p.numel() for p in model.parameters()) == 1_189_600
    assert count_flops_detailed(model, 112) == 844_387_456


def test_the_lfw_dev_diagnostic_genotypes_are_the_edits_the_experiments_describe():
    """experiments/genotypes: lfw_dev with one normal-cell edge a skip, and each genotype's
    normal cell with the other's reduction cell (the genotype_ablation_lfw diagnosis)."""
    folder = Path(__file__).parents[1] / "experiments/genotypes"
    lfw_dev, face = load_genotype("lfw_dev"), load_genotype("face")
    mixed = load_genotype(folder / "lfwnormal_facereduce.yaml")
    assert (mixed.normal, mixed.reduce) == (lfw_dev.normal, face.reduce)
    mixed = load_genotype(folder / "facenormal_lfwreduce.yaml")
    assert (mixed.normal, mixed.reduce) == (face.normal, lfw_dev.reduce)
    skip = load_genotype(folder / "lfw_dev_skip.yaml")
    assert skip.reduce == lfw_dev.reduce
    changed = [(a, b) for a, b in zip(lfw_dev.normal, skip.normal, strict=True) if a != b]
    assert changed == [(lfw_dev.normal[3], (("skip_connect", 1), lfw_dev.normal[3][1]))]


@pytest.mark.parametrize(
    ("official", "preset"), [("S128", "pocketnet_s_128"), ("M256", "pocketnet_m_256")]
)
def test_official_state_dict_loads_strictly_without_key_mapping(official, preset):
    layout = _official_layout(official)
    model = build_pocketnet(preset)
    ours = [(k, tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items()]
    assert ours == layout
    generator = torch.Generator().manual_seed(0)
    checkpoint = {
        key: torch.randint(0, 100, shape, generator=generator, dtype=torch.int64)
        if dtype == "torch.int64"
        else torch.randn(shape, generator=generator)
        for key, shape, dtype in layout
    }
    model.load_state_dict(checkpoint, strict=True)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in checkpoint.items())


def test_timm_checkpoint_round_trip_gives_identical_embeddings(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("pocketnet_s_128", embedding_size=64, input_size=48)
    source.train()
    with torch.no_grad():
        source(torch.randn(4, 3, 48, 48))  # move the BN running statistics off their defaults
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)

    fresh = timm.create_model("pocketnet_s_128", embedding_size=64, input_size=48)
    loaded = timm.create_model(
        "pocketnet_s_128", embedding_size=64, input_size=48, checkpoint_path=str(path)
    )
    x = torch.randn(3, 3, 48, 48)
    for model in (source, fresh, loaded):
        model.eval()
    with torch.no_grad():
        expected = source(x)
        assert expected.shape == (3, 64)
        assert not torch.allclose(fresh(x), expected)
        assert torch.equal(loaded(x), expected)
    assert loaded.pretrained_cfg["input_size"] == (3, 48, 48)


def test_timm_embedding_size_overrides_the_name():
    model = timm.create_model("pocketnet_s_128", embedding_size=256)
    reference = build_pocketnet("pocketnet_s_256")
    assert [(k, v.shape) for k, v in model.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()
    ]
    wide = timm.create_model("pocketnet_m_128", embedding_size=512, num_classes=0)
    assert wide.tail[1].weight.shape == (1024, 1024, 1, 1)  # inner width 1024 at 512-d
    assert wide.tail[6].weight.shape == (512, 1024, 1, 1)


def test_timm_data_config_is_the_face_normalisation_with_overlay():
    model = timm.create_model(
        "pocketnet_s_128", input_size=64, pretrained_cfg_overlay={"mean": (0.4, 0.4, 0.4)}
    )
    config = timm.data.resolve_model_data_config(model)
    assert config["input_size"] == (3, 64, 64)
    assert (config["mean"], config["std"]) == ((0.4, 0.4, 0.4), (0.5, 0.5, 0.5))


def test_timm_rejects_hosted_weights_tags_and_classifiers():
    with pytest.raises(ValueError, match="no pretrained configs or tags"):
        timm.create_model("pocketnet_s_128.ms1mv2")
    with pytest.raises(TypeError, match="drop_rate"):
        timm.create_model("pocketnet_s_128", drop_rate=0.1)
    with pytest.raises(ValueError, match="timm hosts no weights"):
        timm.create_model("pocketnet_s_128", pretrained=True)
    with pytest.raises(ValueError, match="num_classes must be 0"):
        timm.create_model("pocketnet_m_256", num_classes=1000)


@pytest.mark.parametrize(
    ("size", "kernel"), [(112, 7), (96, 6), (64, 4), (56, 4), (48, 3), (32, 2)]
)
def test_lower_resolutions_end_in_a_1x1_gdc_output(size, kernel):
    model = build_pocketnet("pocketnet_s_128", input_size=size).eval()
    assert final_map_size(size) == kernel
    assert model.tail[4].kernel_size == (kernel, kernel)
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 128)


def test_feature_taps_name_each_stage_output():
    model = build_pocketnet("pocketnet_s_128").eval()
    assert model.feature_taps == {
        "stage1": "cells.5",
        "stage2": "cells.11",
        "stage3": "cells.16",
        "stage4": "cells.17",
        "embedding": "tail",
    }
    modules = dict(model.named_modules())
    shapes = {}
    for name, path in model.feature_taps.items():
        modules[path].register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape))
        )
    with torch.no_grad():
        model(torch.randn(1, 3, 112, 112))
    assert shapes == {
        "stage1": (1, 64, 56, 56),
        "stage2": (1, 128, 28, 28),
        "stage3": (1, 256, 14, 14),
        "stage4": (1, 512, 7, 7),
        "embedding": (1, 128, 1, 1),
    }


def test_reduction_positions():
    assert reduction_cells(18) == (6, 12, 17)
    assert reduction_cells(9) == (3, 6, 8)
    assert reduction_cells(3) == (1, 2)  # positions coincide: two reductions


def test_factorized_reduce_equals_the_official_shift_on_even_maps_and_handles_odd_ones():
    torch.manual_seed(0)
    reduce = FactorizedReduce(6, 8).eval()
    x = torch.randn(2, 6, 14, 14)
    with torch.no_grad():
        act = reduce.relu(x)
        official = reduce.bn(
            torch.cat(
                [
                    reduce.conv12(reduce.conv11(act)),
                    reduce.conv22(reduce.conv21(act[:, :, 1:, 1:])),
                ],
                dim=1,
            )
        )
        assert torch.equal(reduce(x), official)
        assert reduce(torch.randn(1, 6, 7, 7)).shape == (1, 8, 4, 4)


def test_flop_counter_constants_on_a_hand_counted_model():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.PReLU(4),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 5),
    )
    conv, bn, prelu, pool, linear = (2 * 27 + 1) * 256, 2 * 256, 256, 4 * 64, (2 * 64 + 1) * 5
    assert count_flops_detailed(model, 8) == conv + bn + prelu + pool + linear
    with pytest.raises(ValueError, match="no FLOPs rule for LayerNorm"):
        count_flops_detailed(nn.Sequential(nn.Conv2d(3, 4, 1), nn.LayerNorm(8)), 8)


def test_genotype_string_and_yaml_round_trip(tmp_path):
    face = load_genotype("face")
    assert face.name == "softmax_casia"
    assert parse_genotype(FACE_STRING) == face
    assert face.to_darts_string() == FACE_STRING
    assert Genotype.from_yaml(face.to_yaml()) == face
    renamed = Genotype(face.normal, face.normal_concat, face.reduce, face.reduce_concat, "a: b")
    assert Genotype.from_yaml(renamed.to_yaml()).name == "a: b"
    cifar = load_genotype("softmax_cifar10")
    assert cifar.normal[2] == (("max_pool_3x3", 2), ("dw_conv_7x7", 3))
    assert cifar.reduce[0] == (("max_pool_3x3", 0), ("dw_conv_7x7", 1))
    assert parse_genotype(cifar.to_darts_string()) == cifar != face

    yaml_file, text_file = tmp_path / "g.yaml", tmp_path / "g.txt"
    yaml_file.write_text(cifar.to_yaml())
    text_file.write_text(cifar.to_darts_string())
    assert load_genotype(yaml_file) == load_genotype(str(text_file)) == cifar


def test_flat_darts_list_form_is_two_edges_per_node():
    flat = FACE_STRING.replace("[[", "[").replace("]]", "]").replace("], [", ", ")
    assert "normal=[('dw_conv_3x3', 0), ('dw_conv_1x1', 1), ('dw_conv_3x3', 2)" in flat
    assert parse_genotype(flat) == load_genotype("face")
    with pytest.raises(ValueError, match="2 edges per node"):
        parse_genotype(flat.replace("('dw_conv_1x1', 1), ", "", 1))


def test_tiny_pocketnet_trains_one_step():
    torch.manual_seed(0)
    model = PocketNet(C=8, n_cells=3, embedding_size=32, input_size=48)
    assert model.tail[4].kernel_size == (6, 6)  # two reductions: 48 -> 24 -> 12 -> 6
    classifier = nn.Linear(32, 5)
    params = [*model.parameters(), *classifier.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(4, 3, 48, 48), torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(classifier(model(x)), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)]
    assert all(changed)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (FACE_STRING.replace("dw_conv_1x1", "conv_9x9"), "unknown operation 'conv_9x9'"),
        (FACE_STRING[:-1], "malformed genotype string"),
        (
            "Genotype(normal=__import__('os').getcwd(), normal_concat=range(2, 6), reduce=[], "
            "reduce_concat=range(2, 6))",
            "normal must be a literal",
        ),
        ("dict(normal=[])", "looks like 'Genotype"),
        (
            FACE_STRING.replace(", reduce_concat=range(2, 6)", ""),
            r"missing fields \['reduce_concat'\]",
        ),
        (FACE_STRING.replace("('dw_conv_3x3', 4)", "('dw_conv_3x3', 5)"), "source 5 must be"),
        (
            FACE_STRING.replace("normal_concat=range(2, 6)", "normal_concat=range(2, 7)"),
            r"normal_concat \[2, 3, 4, 5, 6\] must list node states",
        ),
    ],
)
def test_bad_genotype_strings_are_rejected_with_the_reason(text, message):
    with pytest.raises(ValueError, match=message):
        parse_genotype(text)


def test_bad_names_and_sizes_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="unknown PocketNet operation 'conv_9x9'"):
        make_op("conv_9x9", 8, 1)
    with pytest.raises(ValueError, match=r"unknown keys \['nodes'\], missing keys \['normal'\]"):
        Genotype.from_yaml("nodes: 4\nnormal_concat: [2]\nreduce: []\nreduce_concat: [2]\n")
    with pytest.raises(ValueError, match="unknown genotype 'imagenet'"):
        load_genotype("imagenet")
    with pytest.raises(ValueError, match="unknown PocketNet preset 'pocketnet_l_128'"):
        build_pocketnet("pocketnet_l_128")
    with pytest.raises(ValueError, match="input_size=8 is too small.*at least 16 pixels"):
        PocketNet(input_size=8)
    model = PocketNet(C=8, n_cells=4, embedding_size=16, input_size=48).eval()
    for side in (112, 32):
        with pytest.raises(ValueError, match=f"built for input_size=48 got a {side}x{side} input"):
            model(torch.zeros(1, 3, side, side))
    assert model(torch.zeros(1, 3, 47, 47)).shape == (1, 16)  # same 3x3 final map
