"""The parity gate: nothing is timed before it has been shown to compute what PyTorch computes.

* onnxruntime graphs go through :func:`runtime.parity.check_artifact` (the one parity
  implementation) with the benchmark's own :class:`~runtime.sessions.SessionConfig`, so the
  settings timed (device, threads, TF32, cuDNN search) are the settings checked.
* The other engines (OpenVINO, TensorRT, torch.compile) are checked on the very runner that
  is about to be timed, at its batch and input size, through the same comparison and the
  same default tolerances (:mod:`runtime.compare`), on the same seeded inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from exporter.artifact import ParityRecord, Tolerance, VariantKey
from exporter.data import random_input
from exporter.errors import UserError
from exporter.reference import forward_outputs

from ..compare import compare, default_tolerance
from ..parity import DEFAULT_SEED, check_artifact
from .config import numeric_precision
from .engines import ModelContext, Runner

RANDOM_INPUTS = "random uniform [-1, 1)"


def tolerance_for(device: str, precision: str, tf32: bool) -> Tolerance:
    return default_tolerance(device, numeric_precision(precision), tf32=tf32)


def check_onnxruntime(
    ctx: ModelContext,
    precision: str,
    batch_sizes: Sequence[int],
    sizes: Sequence[tuple[int, int]],
    seed: int = DEFAULT_SEED,
) -> ParityRecord:
    """The onnxruntime graph against PyTorch at every timed batch size and input size."""
    assert ctx.reference is not None
    # A CUDA graph replays the same kernels on fixed buffers (the numerics are the captured
    # run's); the check feeds fresh host arrays, so it runs the session uncaptured.
    session = replace(ctx.session, cuda_graph=False)
    return check_artifact(
        ctx.artifact,
        VariantKey.parse(precision),
        ctx.reference,
        ctx.graphs[precision],
        sizes=sizes,
        batch_sizes=batch_sizes,
        session=session,
        seed=seed,
    )


#: Seeded inputs and the reference's outputs on them, by (shape, seed): every engine of one
#: (model, batch, size) group is checked on the same batch, so PyTorch runs it once.
ReferenceCache = dict[tuple[tuple[int, ...], int], tuple[np.ndarray, list[np.ndarray]]]


def check_runner(
    ctx: ModelContext,
    runner: Runner,
    shape: tuple[int, ...],
    size: tuple[int, int] | None,
    seed: int = DEFAULT_SEED,
    cache: ReferenceCache | None = None,
) -> ParityRecord:
    """A prepared engine against the PyTorch reference on one seeded batch of its own size."""
    assert ctx.reference is not None
    batch = int(shape[0])
    tf32 = bool(runner.settings.get("tf32")) if ctx.device == "cuda" else False
    tol = tolerance_for(ctx.device, runner.precision, tf32 or (runner.engine == "tensorrt"))
    cache = {} if cache is None else cache
    key = (tuple(int(d) for d in shape), seed)
    if key not in cache:
        inp = random_input(tuple(shape[1:]), batch, seed=seed)
        refs = [r.float().numpy() for r in forward_outputs(ctx.reference.model, inp, ctx.reference.name)]
        cache[key] = (inp.numpy(), refs)
    x, refs = cache[key]
    outs = runner.infer(x.copy())  # its own copy: a model that changes its input in place spoils the cache
    if len(outs) != len(refs):
        raise UserError(f"{runner.engine} gives {len(outs)} outputs, the PyTorch model {len(refs)}")
    specs = ctx.artifact.manifest.outputs
    names = [o.name for o in specs] if len(specs) == len(refs) else [f"output{i}" for i in range(len(refs))]
    results = [compare(r, o, tol, output=name, size=size) for name, r, o in zip(names, refs, outs)]
    return ParityRecord(
        device=ctx.device,
        providers=[runner.engine],
        precision=runner.precision,
        inputs=RANDOM_INPUTS,
        seed=seed,
        batch_sizes=[batch],
        sizes=[size] if size else [],
        tolerance=tol,
        passed=all(r.passed for r in results),
        results=results,
    )


def passed_at(record: ParityRecord, batch: int, size: tuple[int, int] | None) -> tuple[bool, str | None]:
    """Whether the comparisons of ``record`` at one batch (and size) passed, and the first failure."""
    mine = [
        r
        for r in record.results
        if r.batch_size == batch and (size is None or r.height is None or (r.height, r.width) == size)
    ]
    if record.accuracy is not None and record.accuracy.failure:
        return False, record.accuracy.failure
    for r in mine:
        if not r.passed:
            return False, f"output '{r.output}': {r.failures[0]}"
    return True, None


def worst_abs_err(record: ParityRecord, batch: int | None = None) -> float | None:
    values = [r.max_abs_err for r in record.results if batch is None or r.batch_size == batch]
    if not values or any(v is None for v in values):
        return None
    return max(v for v in values if v is not None)
