"""``runtime.profile`` on real graphs: layers under their module names, the dominant layer first with its
share, coverage of the end-to-end time, int8 kernels and per-layer SQNR on the same rows, OpenVINO."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest

from exporter import artifact as art
from exporter.export import export_model
from exporter.variants import build_variant
from runtime.profile import ProfileConfig, profile_artifact
from runtime.profile.records import MIN_COVERAGE
from tests.helpers import write_user_model

DOMINANT = '''
import torch
from torch import nn


class OneBigLayer(nn.Module):
    """A 7x7 convolution with 99.9% of the operations between two tiny layers. 7x7, not 3x3: with 98% of the
    operations a 3x3 one had once only 69% of the time on a busy machine, the memory-bound nodes around it
    (layout reorders, the mean) taking the rest; a 7x7 one has 85-88% here, under the same load."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 1)
        self.big = nn.Conv2d(8, 64, 7, padding=3)
        self.head = nn.Linear(64, 2)

    def forward(self, x):
        x = torch.relu(self.big(torch.relu(self.stem(x))))
        return self.head(torch.flatten(x.mean((2, 3)), 1))
'''


def _profile(arts: Path, name: str, **kw) -> object:
    settings = {"threads": 1, "warmup": 1, "runs": 15, "peaks": False, **kw}
    return profile_artifact(ProfileConfig(name, artifacts_dir=arts, **settings))


def test_the_dominant_layer_comes_first_with_its_share(tmp_path: Path) -> None:
    source = write_user_model(tmp_path, DOMINANT, "big.py")
    export_model(f"{source}:OneBigLayer", input_shape=(3, 64, 64), output_dir=tmp_path / "a", name="big")
    profile = _profile(tmp_path / "a", "big", peaks=True)
    first = profile.layers[0]
    assert first.layer == "big" and first.module == "big" and first.module_type == "Conv2d"
    assert first.flops == 2 * 64 * 64 * 64 * 8 * 49
    total = sum(r.median_ms for r in profile.layers)
    assert first.share == pytest.approx(first.median_ms / total) and first.share > 0.7
    assert profile.layers[-1].cumulative_share == pytest.approx(1.0)
    assert [r.rank for r in profile.layers] == list(range(1, len(profile.layers) + 1))
    assert all(a.median_ms >= b.median_ms for a, b in zip(profile.layers, profile.layers[1:]))
    # held to the fp32 peak the probes measured on these threads
    assert first.peak_precision == "fp32" and first.peak_gflops == profile.machine.peak_gflops("fp32")
    assert first.fraction_of_peak == pytest.approx(first.achieved_gflops / first.peak_gflops)
    assert profile.coverage.end_to_end_ms > 0 and profile.coverage.unprofiled_ms > 0
    assert profile.coverage.ok == (profile.coverage.fraction >= MIN_COVERAGE)


@pytest.fixture()
def arts(exported, tmp_path: Path) -> Path:
    root = tmp_path / "artifacts"
    shutil.copytree(exported("resnet_cifar").directory, root / "resnet_cifar")
    return root


def _conv_modules(artifact_dir: Path) -> set[str]:
    manifest = art.open_artifact(artifact_dir).manifest
    graph = onnx.load(str(artifact_dir / manifest.file))
    return {manifest.layers.nodes[n.name] for n in graph.graph.node if n.op_type == "Conv"}


def test_every_convolution_under_its_module_name_and_int8_beside_its_sqnr(arts: Path) -> None:
    convs = _conv_modules(arts / "resnet_cifar")
    fp32 = _profile(arts, "resnet_cifar")
    rows = {r.layer: r for r in fp32.layers}
    assert convs <= set(rows), convs - set(rows)
    assert all(rows[c].op_types == ["Conv"] and rows[c].precision == "fp32" and rows[c].flops for c in convs)
    assert fp32.placement is not None and fp32.placement.ok and fp32.sqnr_source is None

    int8 = _profile(arts, "resnet_cifar", precision="int8")
    rows8 = {r.layer: r for r in int8.layers}
    assert convs <= set(rows8)
    for c in convs:
        assert "QLinearConv" in rows8[c].op_types and rows8[c].precision == "int8", rows8[c]
        assert rows8[c].sqnr_db is not None  # the same row holds the layer's SQNR against fp32
    assert "int8 graph vs the fp32 graph" in int8.sqnr_source


def test_openvino_profiles_the_same_artifact(arts: Path) -> None:
    pytest.importorskip("openvino")
    convs = _conv_modules(arts / "resnet_cifar")
    fp32 = _profile(arts, "resnet_cifar", engine="openvino")
    rows = {r.layer: r for r in fp32.layers}
    assert convs <= set(rows) and fp32.placement is None
    assert all(rows[c].precision == "fp32" and rows[c].kernels[0].endswith(("f32", "FP32")) for c in convs)
    int8 = _profile(arts, "resnet_cifar", engine="openvino", precision="int8", sqnr=False)
    rows8 = {r.layer: r for r in int8.layers}
    assert any(rows8[c].precision == "int8" and "I8" in rows8[c].kernels[0].upper() for c in convs if c in rows8)


@pytest.mark.slow
def test_resnet18_profile_covers_its_time(exported, tmp_path: Path) -> None:
    """resnet18 at batch 1, 2 threads: the layers cover >= 90% of the end-to-end median; every
    convolution under its module name; its int8 variant on int8 kernels with SQNR on the same rows;
    OpenVINO on the same artifact."""
    root = tmp_path / "artifacts"
    shutil.copytree(exported("resnet18").directory, root / "resnet18")
    convs = _conv_modules(root / "resnet18")
    assert len(convs) == 20
    fp32 = _profile(root, "resnet18", threads=2, runs=30)
    assert fp32.coverage.fraction >= 0.9 and fp32.coverage.ok, fp32.coverage.line()
    assert convs <= {r.layer for r in fp32.layers}
    int8 = _profile(root, "resnet18", threads=2, runs=30, precision="int8")
    rows = {r.layer: r for r in int8.layers}
    assert all(rows[c].precision == "int8" and rows[c].sqnr_db is not None for c in convs)
    assert int8.coverage.fraction >= 0.9, int8.coverage.line()
    ov = _profile(root, "resnet18", threads=2, runs=20, engine="openvino", precision="int8", sqnr=False)
    assert convs <= {r.layer for r in ov.layers}


def test_lenet5_fused_gemms_and_int8_convolutions_keep_their_modules_and_flops(lenet_dir: Path) -> None:
    """Defects: onnxruntime's FusedGemm ("fused /fullconn_layer/fullconn_layer.0/Gemm") mapped to no
    module, and with an int8.opt-cpu variant recorded the int8 QLinearConv rows had no FLOPs."""
    arts = lenet_dir.parent
    fp32 = _profile(arts, "lenet5")
    rows = {r.layer: r for r in fp32.layers}
    assert not [r.layer for r in fp32.layers if r.layer.startswith("fused ")]
    gemms = [r for r in fp32.layers if "FusedGemm" in r.op_types]
    assert gemms, "onnxruntime no longer fuses lenet5's Gemm+ReLU: this test checks nothing"
    for r in gemms:
        assert r.module is not None and r.module_type == "Linear" and r.flops, r
    for key in (art.VariantKey("int8"), art.VariantKey("int8", "cpu")):
        build_variant(lenet_dir, key)
    int8 = _profile(arts, "lenet5", precision="int8", sqnr=False)
    convs = [r for r in int8.layers if "QLinearConv" in r.op_types]
    assert {r.module for r in convs} == {"conv_layer.0", "conv_layer.2"}
    for r in convs:
        assert r.flops == rows[r.module].flops and r.achieved_gflops, r
