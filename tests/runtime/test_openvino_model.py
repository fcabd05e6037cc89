"""The one OpenVINO compile configuration the bench, the profile, the precision search and the parity check
share: a static shape, the f32 hint for fp32 and int8, threads left free to move between cores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from exporter import artifact as art
from runtime.bench.engines import ModelContext, prepare
from runtime.openvino_model import OpenvinoInfer, compile_config
from runtime.sessions import SessionConfig

pytest.importorskip("openvino")


def test_the_timed_openvino_model_is_static_f32_and_unpinned(lenet_dir: Path) -> None:
    """Pinned threads (OpenVINO's LATENCY default) timed resnet_cifar's fp32 at 4-5 ms on a shared 2-core machine
    where unpinned ones took 1.5-2 ms: the bench and the search now compile unpinned, as they report."""
    a = art.open_artifact(lenet_dir)
    fp32 = a.path().read_bytes()
    x = np.zeros([1, *a.manifest.input_shape], dtype=np.float32)
    ctx = ModelContext(
        name=a.name, artifact=a, graphs={"fp32": fp32}, graph_paths={"fp32": a.manifest.file}, reference=None,
        device="cpu", session=SessionConfig(device="cpu", threads=1), threads=1,
    )  # fmt: skip
    runner = prepare("openvino", ctx, "fp32", x)
    try:
        assert runner.settings["enable_cpu_pinning"] == "False"
        assert runner.settings["inference_precision_hint"] in ("f32", "<Type: 'float32'>")
    finally:
        runner.close()
    assert compile_config("int8", 2)["INFERENCE_PRECISION_HINT"] == "f32"

    judged = OpenvinoInfer(fp32, "int8", 1)
    out = judged(np.zeros([3, *a.manifest.input_shape], dtype=np.float32))
    compiled = judged.compiled([3, *a.manifest.input_shape])
    assert out[0].shape[0] == 3 and judged.inference_precision == "f32"
    assert compiled.get_property("ENABLE_CPU_PINNING") is False  # type: ignore[attr-defined]
    assert compiled.inputs[0].get_partial_shape().is_static  # type: ignore[attr-defined]
