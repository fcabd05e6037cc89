"""--dynamic-size building blocks: exact dynamic adaptive pooling, its export, and model size limits."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from exporter.errors import ExportFailed, UserError
from exporter.graph import check_graph, io_shapes, op_counts, simplify_graph
from exporter.pooling import (
    DynamicAdaptivePool2d,
    SizeLimits,
    bin_mask,
    dynamic_adaptive_pooling,
    find_size_limits,
)
from exporter.trace import BATCH_DIM, HEIGHT_DIM, SUPPORTED_OPSETS, WIDTH_DIM, trace_to_onnx
from exporter.zoo import get_spec

LENGTHS = (1, 2, 5, 6, 7, 13, 14, 33, 50)
OUTPUT_SIZES = ((6, 6), (7, 7), (3, 5), (2, 1), (1, 1), (None, 4), (4, None), 3)
POOLS = {"avg": nn.AdaptiveAvgPool2d, "max": nn.AdaptiveMaxPool2d}


def _session(model) -> ort.InferenceSession:  # type: ignore[no-untyped-def]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _export_dynamic(model: nn.Module, example: torch.Tensor, opset: int = 17):  # type: ignore[no-untyped-def]
    """trace_to_onnx(dynamic_size=True), then the checker and onnxsim, as the pipeline does."""
    raw = trace_to_onnx(model, example, opset, dynamic_size=True)
    simplified = simplify_graph(check_graph(raw))
    c = example.shape[1]
    assert io_shapes(simplified)["input"] == [BATCH_DIM, c, HEIGHT_DIM, WIDTH_DIM]
    return simplified


# --------------------------------------------------------------------------- eager exactness


def test_bin_mask_is_pytorch_bins() -> None:
    for length in (*LENGTHS, 224):
        for n in (1, 2, 3, 4, 5, 6, 7, 13, 50):
            mask = bin_mask(length, n)
            assert mask.shape == (n, length) and mask.dtype == torch.bool
            for i in range(n):
                start, end = math.floor(i * length / n), math.ceil((i + 1) * length / n)
                expected = torch.zeros(length, dtype=torch.bool)
                expected[start:end] = True
                assert torch.equal(mask[i], expected), (length, n, i)


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("output_size", OUTPUT_SIZES, ids=str)
def test_swapped_pool_matches_pytorch_in_eager(mode: str, output_size) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    reference = POOLS[mode](output_size)
    model = nn.Sequential(reference)
    with dynamic_adaptive_pooling(model) as swapped:
        pool = model[0]
        assert swapped == (0 if output_size == (1, 1) else 1)
        assert isinstance(pool, DynamicAdaptivePool2d) == bool(swapped)
        for h in LENGTHS:
            for w in LENGTHS:
                x = torch.randn(2, 3, h, w)
                got, want = pool(x), reference(x)
                assert got.shape == want.shape, (h, w)
                if mode == "max":
                    assert torch.equal(got, want), (h, w)
                else:
                    assert (got - want).abs().max().item() <= 1e-6, (h, w)
        unbatched = torch.randn(3, 13, 7)
        assert torch.allclose(pool(unbatched), reference(unbatched), atol=1e-6, rtol=0)
    assert model[0] is reference


def test_swap_keeps_state_dict_and_restores_modules() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d((6, 6)), nn.AdaptiveMaxPool2d(1))
    keys, originals = list(model.state_dict()), list(model)
    with dynamic_adaptive_pooling(model) as swapped:
        assert swapped == 1
        assert isinstance(model[1], DynamicAdaptivePool2d) and model[2] is originals[2]
        assert list(model.state_dict()) == keys
        assert not list(model[1].parameters()) and not list(model[1].buffers())
    assert list(model) == originals


def test_swap_refuses_max_pool_with_indices() -> None:
    model = nn.Sequential(nn.AdaptiveAvgPool2d(5), nn.AdaptiveMaxPool2d((3, 3), return_indices=True))
    with pytest.raises(ExportFailed, match=r"layer '1' \(AdaptiveMaxPool2d, return_indices=True\)"):
        with dynamic_adaptive_pooling(model):
            pass
    assert isinstance(model[0], nn.AdaptiveAvgPool2d)  # nothing left swapped


# --------------------------------------------------------------------------- export, every opset


class _Pools(nn.Module):
    """Every kind of adaptive pool on the raw input (exact to compare), plus global ones after a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.avg66 = nn.AdaptiveAvgPool2d((6, 6))
        self.avg35 = nn.AdaptiveAvgPool2d((3, 5))
        self.max77 = nn.AdaptiveMaxPool2d(7)
        self.max21 = nn.AdaptiveMaxPool2d((2, 1))
        self.avg_keep_h = nn.AdaptiveAvgPool2d((None, 4))
        self.max_keep_w = nn.AdaptiveMaxPool2d((3, None))
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.global_avg = nn.AdaptiveAvgPool2d(1)
        self.global_max = nn.AdaptiveMaxPool2d((1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.conv(x)
        return (
            self.avg66(x),
            self.avg35(x),
            self.max77(x),
            self.max21(x),
            self.avg_keep_h(x),
            self.max_keep_w(x),
            torch.cat([self.global_avg(y), self.global_max(y)], 1),
        )


_EXACT = {2, 3, 5}  # max-pool outputs: no arithmetic, so bit-equal
SMALL_SIZES = [(1, 1), (2, 7), (5, 5), (6, 6), (7, 13), (13, 14), (14, 2), (33, 50), (50, 33)]


@pytest.mark.parametrize("opset", list(SUPPORTED_OPSETS))
def test_small_model_exports_exact_pools_at_every_opset(opset: int) -> None:
    torch.manual_seed(opset)
    model = _Pools().eval()
    graph = _export_dynamic(model, torch.randn(1, 3, 20, 24), opset)
    ops = op_counts(graph)
    assert ops.get("GlobalAveragePool") == 1 and ops.get("GlobalMaxPool") == 1
    assert "AveragePool" not in ops and "MaxPool" not in ops  # nothing baked in at the tracing size
    assert isinstance(model.avg66, nn.AdaptiveAvgPool2d)  # restored after the export
    session = _session(graph)
    for batch in (1, 3):
        for h, w in SMALL_SIZES:
            x = torch.randn(batch, 3, h, w) * 10
            with torch.no_grad():
                want = [t.numpy() for t in model(x)]
            got = session.run(None, {"input": x.numpy()})
            for k, (g, r) in enumerate(zip(got, want)):
                assert g.shape == r.shape, (opset, batch, h, w, k)
                if k in _EXACT:
                    assert np.array_equal(g, r), (opset, batch, h, w, k)
                else:
                    tol = 1e-4 if k == 6 else 1e-5  # conv + global pools vs raw averages of |x| <~ 40
                    assert np.abs(g - r).max() <= tol, (opset, batch, h, w, k, np.abs(g - r).max())


def test_dynamic_size_refusals_are_one_clear_line() -> None:
    with pytest.raises(UserError, match="4-D"):
        trace_to_onnx(nn.Linear(4, 2).eval(), torch.randn(1, 4), 17, dynamic_size=True)

    class WithIndices(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = nn.AdaptiveMaxPool2d(3, return_indices=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.pool(x)[0]

    with pytest.raises(ExportFailed, match=r"^layer 'pool' \(AdaptiveMaxPool2d, return_indices=True\) cannot"):
        trace_to_onnx(WithIndices().eval(), torch.randn(1, 3, 8, 8), 17, dynamic_size=True)


# --------------------------------------------------------------------------- zoo models


def _zoo(name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    spec = get_spec(name)
    torch.manual_seed(0)
    model = spec.build().eval()
    if name.startswith("googlenet"):  # its init (std 0.01, no BN statistics) makes outputs nearly constant
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
    return model, spec.input_shape


def _compare_zoo(name: str, sizes: list[tuple[int, int]], batch: int, tol: float) -> None:
    model, (c, h0, w0) = _zoo(name)
    graph = _export_dynamic(model, torch.randn(1, c, h0, w0))
    session = _session(graph)
    limits = find_size_limits(model, (c, h0, w0), name=name)
    for h, w in [*sizes, limits.min_size]:
        x = torch.randn(batch, c, h, w)
        with torch.no_grad():
            want = model(x).numpy()
        got = session.run(None, {"input": x.numpy()})[0]
        scale = max(1.0, float(np.abs(want).max()))
        assert np.abs(got - want).max() <= tol * scale, (name, h, w, np.abs(got - want).max())


def test_alexnet_dynamic_size_matches_pytorch() -> None:
    """AdaptiveAvgPool 6x6 after a 1/32 trunk: identity at 224, real bins at 256x300 and 193x211."""
    _compare_zoo("alexnet", [(224, 224), (256, 300), (193, 211), (100, 383)], batch=3, tol=1e-5)


@pytest.mark.slow
def test_vgg11_dynamic_size_matches_pytorch() -> None:
    _compare_zoo("vgg11", [(224, 224), (193, 211)], batch=1, tol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "googlenet"])
def test_global_pool_models_dynamic_size_match_pytorch(name: str) -> None:
    _compare_zoo(name, [(224, 224), (256, 300), (193, 211)], batch=3 if name == "resnet18" else 1, tol=1e-4)


def test_default_export_is_unchanged() -> None:
    """dynamic_size=False still bakes alexnet's 6x6 adaptive pool into one AveragePool."""
    model, (c, h, w) = _zoo("alexnet")
    graph = trace_to_onnx(model, torch.randn(1, c, h, w), 17)
    ops = op_counts(graph)
    assert ops.get("AveragePool") == 1
    assert not {"MatMul", "Range", "Where", "Shape"} & set(ops)
    assert io_shapes(graph)["input"] == [BATCH_DIM, c, h, w]


def test_fixed_size_exports_pools_whose_output_does_not_divide_the_input() -> None:
    """Defect: at a fixed size torch refuses an adaptive pool whose output does not divide its
    input (alexnet at 3x256x256: 7x7 into 6x6; a user's 3x3 pool over 20x20), and the export
    failed. Only such pools are swapped; the divisible one still exports as a plain pool."""
    torch.manual_seed(0)
    # at 24x30: avg66, avg35 and max21 divide their input; max77 does not; two keep a dim (None)
    model = _Pools().eval()
    x = torch.rand(3, 3, 24, 30) * 2 - 1
    graph = trace_to_onnx(model, x[:2], 17)
    ops = op_counts(graph)
    assert ops.get("AveragePool") == 2 and "MatMul" in ops  # avg66, avg35 plain; avg_keep_h exact bins
    assert "Shape" not in ops  # static bins: nothing depends on the runtime size
    assert io_shapes(graph)["input"] == [BATCH_DIM, 3, 24, 30]
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = [t.numpy() for t in model(x)]
    for w, g in zip(want, sess.run(None, {"input": x.numpy()})):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert isinstance(model.avg35, nn.AdaptiveAvgPool2d)  # restored


# --------------------------------------------------------------------------- size limits

MINIMUM_SIZES = {"alexnet": (63, 63), "vgg11": (32, 32), "googlenet": (15, 15), "resnet18": (1, 1)}


def _runs(model: nn.Module, c: int, h: int, w: int) -> bool:
    try:
        with torch.no_grad():
            model(torch.randn(1, c, h, w))
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(MINIMUM_SIZES))
def test_size_limits_of_variable_size_models(name: str) -> None:
    model, (c, h0, w0) = _zoo(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    limits = find_size_limits(model, (c, h0, w0), name=name)
    assert isinstance(limits, SizeLimits) and limits.monotonic
    assert limits.min_size == MINIMUM_SIZES[name]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # user's model untouched
    assert next(model.parameters()).device.type == "cpu" and not model.training
    min_h, min_w = limits.min_size
    if name != "vgg11":  # a real run of VGG at 224 costs seconds: its sizes are checked on the cheap side
        assert _runs(model, c, min_h, w0) and _runs(model, c, h0, min_w)
    assert _runs(model, c, min_h, min_w)
    if min_h > 1:
        assert not _runs(model, c, min_h - 1, min_w) and not _runs(model, c, min_h, min_w - 1)


def test_lenet5_cannot_take_a_dynamic_size() -> None:
    model, shape = _zoo("lenet5")
    with pytest.raises(ExportFailed) as info:
        find_size_limits(model, shape, name="lenet5")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "lenet5 cannot be exported with --dynamic-size: layer 'fullconn_layer.0' (Linear, in_features=400) "
        "needs a fixed input size"
    ), message
    assert "3x32x32" in message


def test_size_limits_name_the_raising_layer_and_note_irregular_sizes() -> None:
    class EvenOnly(nn.Module):
        """A global-pool net that also needs an even height (a stride-2 path concatenated with its skip)."""

        def __init__(self) -> None:
            super().__init__()
            self.down = nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.up = nn.Upsample(scale_factor=2)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(7, 2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.cat([x, self.up(self.down(x))], 1))

    limits = find_size_limits(EvenOnly(), (3, 32, 32))
    assert limits.min_size == (2, 2) and not limits.monotonic
    assert {(3, 32), (33, 32), (32, 33), (33, 33)} <= set(limits.rejected)
    assert all(h % 2 or w % 2 for h, w in limits.rejected)
    assert "except some sizes" in limits.describe()

    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(2 * 8 * 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x).view(-1, 2 * 8 * 8))

    with pytest.raises(ExportFailed, match=r"^tiny cannot .* Flat\.forward \(shape .* needs a fixed input size"):
        find_size_limits(Flat(), (1, 10, 10), name="tiny")
