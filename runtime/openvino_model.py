"""How the project compiles a graph in OpenVINO: one place for the settings the bench, the profile and the
parity check share, so that what is judged runs with the same precision hint as what is timed.

Every compile reshapes the model to the concrete input shape it will run (OpenVINO's fastest path for
a dynamic-size graph), leaves its threads free to move between cores, and pins the inference precision
hint (``f32`` for fp32 and int8 graphs: on CPUs with AVX512_BF16 or AMX OpenVINO's default runs the float
parts in bf16, which is not the graph that was verified). A variant whose record names another hint
(``VariantRecord.openvino_hint``: an ``auto`` graph the precision search verified with its float layers in
bf16) compiles with that one (:func:`hint_for`), so what is timed, profiled, checked and served is what was
verified.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from exporter.artifact import Artifact, Manifest
from exporter.errors import UserError

#: The inference precision hint per graph precision: int8 graphs keep their float islands in f32.
OPENVINO_HINT = {"fp32": "f32", "int8": "f32", "bf16": "bf16"}


def precision_hint(precision: str, hint: str | None = None) -> str:
    """The inference precision hint a ``precision`` graph compiles with: ``hint`` where one is given (a
    variant's recorded :attr:`~exporter.artifact.VariantRecord.openvino_hint`), else the precision's default."""
    return hint or OPENVINO_HINT.get(precision, "f32")


def hint_for(source: Manifest | Artifact, key: str) -> str | None:
    """The precision hint the graph ``key`` of an artifact was verified with where it is not its precision's
    default (the variant's recorded ``openvino_hint``); None for the exported graph, a key naming no variant
    (``bf16``: OpenVINO's hint on the fp32 graph) or a variant without one."""
    manifest = source.manifest if isinstance(source, Artifact) else source
    record = manifest.variants.get(key)
    return record.openvino_hint if record is not None else None


def compile_config(precision: str, threads: int, *, hint: str | None = None) -> dict[str, str | int | bool]:
    """The compile properties for a latency run of a ``precision`` graph on ``threads`` threads; ``hint``
    (``f32``, ``bf16``) overrides the precision's default inference precision hint (see :func:`hint_for`)."""
    return {
        "INFERENCE_PRECISION_HINT": precision_hint(precision, hint),
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        # The LATENCY hint pins OpenVINO's threads to cores by default. On a machine shared with other work
        # a pinned thread waits for its core where an unpinned one moves: resnet_cifar fp32 at batch 1 timed
        # 4.0-4.9 ms pinned against 1.5-2.0 ms unpinned (onnxruntime 1.9-2.3 ms) in the
        # same minute, and pinning slowed fp32 more than int8, inflating the precision search's speed-ups.
        "ENABLE_CPU_PINNING": False,
    }


def inference_precision(compiled: object) -> str:
    """The precision hint a compiled model reports (``f32``, ``bf16``), as OpenVINO names it."""
    value = str(compiled.get_property("INFERENCE_PRECISION_HINT"))  # type: ignore[attr-defined]
    return {"<Type: 'float32'>": "f32", "<Type: 'bfloat16'>": "bf16"}.get(value, value)


def check_hint(compiled: object, asked: str, what: str) -> str | None:
    """The precision hint ``compiled`` reports (None where this OpenVINO cannot read it back), refused in one
    line where it is not ``asked`` (a CPU without bf16 arithmetic compiles a bf16 hint as f32): what would
    run, be timed or be checked is not the graph that was verified. ``what`` names the graph."""
    try:
        got = inference_precision(compiled)
    except Exception:  # an OpenVINO that cannot read it back: nothing to compare
        return None
    if got != asked:
        raise UserError(f"openvino: asked for the {asked} hint for {what}, compiled with {got}")
    return got


class OpenvinoInfer:
    """Runs a graph in OpenVINO on inputs of any shape, one compiled model per shape (reshaped to it);
    ``hint`` overrides the precision's default precision hint (a variant's recorded one, :func:`hint_for`)."""

    def __init__(self, graph: bytes, precision: str, threads: int, *, hint: str | None = None) -> None:
        import openvino as ov

        self.core = ov.Core()
        self.graph = graph
        self.precision = precision
        self.config = compile_config(precision, threads, hint=hint)
        model = self.core.read_model(graph)
        self.output_names = [o.get_any_name() for o in model.outputs]
        self.providers = [f"OpenVINO {ov.__version__} CPU"]
        self._compiled: dict[tuple[int, ...], object] = {}
        self._requests: dict[tuple[int, ...], object] = {}  # one infer request per compiled shape, reused
        #: what each compiled model reports, checked against what was asked
        self.inference_precision: str | None = None

    def compiled(self, shape: Sequence[int]) -> object:
        """The model compiled for ``shape`` (cached)."""
        key = tuple(int(s) for s in shape)
        if key not in self._compiled:
            model = self.core.read_model(self.graph)
            model.reshape(list(key))
            compiled = self.core.compile_model(model, "CPU", self.config)
            asked = str(self.config["INFERENCE_PRECISION_HINT"])
            self.inference_precision = check_hint(compiled, asked, f"the {self.precision} graph")
            self._compiled[key] = compiled
        return self._compiled[key]

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output of the graph on ``x``, as float32."""
        feed = np.ascontiguousarray(x, dtype=np.float32)
        compiled = self.compiled(feed.shape)
        key = tuple(feed.shape)
        request = self._requests.get(key)
        if request is None:
            request = self._requests[key] = compiled.create_infer_request()  # type: ignore[attr-defined]
        request.infer({0: feed})  # type: ignore[attr-defined]
        n = len(compiled.outputs)  # type: ignore[attr-defined]
        # copies: the request's output tensors are overwritten by its next inference
        return [np.array(request.get_output_tensor(i).data, dtype=np.float32) for i in range(n)]  # type: ignore[attr-defined]
