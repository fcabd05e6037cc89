"""The parity check itself (:func:`check`, :func:`check_artifact`); see :mod:`runtime.parity`."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from exporter.artifact import Accuracy, Artifact, ParityRecord, Tolerance, VariantKey
from exporter.data import accuracy, check_batch, digits
from exporter.errors import UserError
from exporter.memory import check_fits
from exporter.reference import Prepared, forward_outputs

from ..compare import compare, default_tolerance
from ..openvino_model import OpenvinoInfer
from ..sessions import SessionConfig, create_session, run
from . import DEFAULT_BATCH_SIZES, DEFAULT_SEED, DIGITS, EXTRA_SIZES


def check_sizes(
    export_hw: tuple[int, int], min_hw: tuple[int, int] | None, requested: Sequence[tuple[int, int]] = ()
) -> list[tuple[int, int]]:
    """The (height, width) pairs to check a dynamic-size graph at; refuses sizes below its minimum."""
    if requested:
        sizes = list(dict.fromkeys(requested))
    else:
        sizes = list(dict.fromkeys([export_hw, *EXTRA_SIZES, *([min_hw] if min_hw else [])]))
    if min_hw:
        small = [s for s in sizes if s[0] < min_hw[0] or s[1] < min_hw[1]]
        if small:
            raise UserError(
                f"input size {small[0][0]}x{small[0][1]} is below the smallest this graph accepts, "
                f"{min_hw[0]}x{min_hw[1]}"
            )
    return sizes


def _feed_dtype(sess) -> np.dtype:  # type: ignore[no-untyped-def]
    return np.dtype(np.float16 if sess.get_inputs()[0].type == "tensor(float16)" else np.float32)


def _run(sess, x: torch.Tensor) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    return [np.asarray(o, dtype=np.float32) for o in run(sess, x.numpy().astype(_feed_dtype(sess)))]


Infer = Callable[[torch.Tensor], list[np.ndarray]]


def _runner(
    graph: bytes | Path, engine: str, config: SessionConfig, precision: str, openvino_hint: str | None = None
) -> tuple[Infer, list[str], str, list[str], OpenvinoInfer | None]:
    """(infer, output names, device, providers, the OpenVINO runner or None) for ``engine``; ``openvino_hint``
    overrides OpenVINO's default precision hint for ``precision``."""
    if engine == "openvino":
        if config.device != "cpu":
            raise UserError("the OpenVINO parity check runs on the CPU")
        data = graph.read_bytes() if isinstance(graph, Path) else graph
        ov = OpenvinoInfer(data, precision, config.threads or os.cpu_count() or 1, hint=openvino_hint)
        return (lambda x: ov(x.numpy())), ov.output_names, "cpu", ov.providers, ov
    if engine != "onnxruntime":
        raise UserError(f"unknown parity engine {engine!r}: choose onnxruntime or openvino")
    sess, info = create_session(graph, config)
    return (lambda x: _run(sess, x)), [o.name for o in sess.get_outputs()], info.device, info.providers, None


def _held_out_accuracy(reference: Prepared, infer: Infer, tol: Tolerance) -> Accuracy:
    """Top-1 of PyTorch and of the graph over every held-out digit, failed where the graph trails by more than
    the tolerance's accuracy drop."""
    held_out = digits(reference.input_shape)[1]
    chunks = range(0, len(held_out.x), 128)
    ref_logits = np.concatenate(
        [forward_outputs(reference.model, held_out.x[k : k + 128], reference.name)[0].numpy() for k in chunks]
    )
    got_logits = np.concatenate([infer(held_out.x[k : k + 128])[0] for k in chunks])
    pt, ox = accuracy(ref_logits, held_out.y), accuracy(got_logits, held_out.y)
    failure = None
    if tol.max_accuracy_drop is not None and ox < pt - tol.max_accuracy_drop:
        failure = (
            f"held-out accuracy {ox:.2%} trails PyTorch fp32's {pt:.2%} by more than "
            f"{tol.max_accuracy_drop * 100:g} points"
        )
    return Accuracy(
        dataset=f"{DIGITS} held-out",
        n=len(held_out.x),
        pytorch_fp32=pt,
        onnx=ox,
        top1_agreement=float((ref_logits.argmax(1) == got_logits.argmax(1)).mean()),
        passed=failure is None,
        failure=failure,
    )


def check(
    graph: bytes | Path,
    reference: Prepared,
    *,
    precision: str = "fp32",
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    sizes: Sequence[tuple[int, int]] = (),
    session: SessionConfig | None = None,
    tolerance: Tolerance | None = None,
    inputs: str = "auto",
    seed: int = DEFAULT_SEED,
    verified_with: tuple[str, Tolerance] | None = None,
    on_step: Callable[[str], None] | None = None,
    engine: str = "onnxruntime",
    openvino_hint: str | None = None,
) -> ParityRecord:
    """Compare ``graph`` with ``reference.model`` on every output, at every batch size and input size.

    ``sizes`` are (height, width) pairs for dynamic-size graphs (empty: the export size).
    ``inputs``: ``random`` (uniform in [-1, 1), seeded), ``digits`` (held-out digits, with the
    accuracy of both sides on all of them), or ``auto`` (digits where the weights were
    trained on them). ``tolerance`` defaults to the provider's and precision's, or, given
    ``verified_with`` (device, tolerance), to the tolerance a variant was verified with on that
    device (an int8 graph of a network so sensitive that its own input rounding nears the
    default, see :func:`exporter.variants.int8_tolerance`). ``engine="openvino"`` runs the graph in
    OpenVINO on the CPU instead (``session`` gives only its threads), compiled as the bench and the
    profile compile it (:mod:`runtime.openvino_model`: the same pinned precision hint); ``openvino_hint``
    (``f32``, ``bf16``) overrides that hint, as a variant's recorded one does (:func:`check_artifact`).
    """
    step = on_step or (lambda _msg: None)
    batch_sizes = [int(b) for b in batch_sizes]
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise UserError(f"batch sizes must be at least 1, got {batch_sizes}")
    if inputs not in ("auto", "random", "digits"):
        raise UserError(f"inputs must be auto, random or digits, not {inputs!r}")
    use_digits = inputs == "digits" or (inputs == "auto" and reference.trained_on == DIGITS)
    if use_digits and len(reference.input_shape) != 3:
        shape = "x".join(map(str, reference.input_shape))
        raise UserError(f"digits inputs are images (C x H x W); {reference.name} takes {shape}: use --inputs random")
    channels = reference.input_shape[0]
    shapes = [(channels, h, w) for h, w in sizes] or [reference.input_shape]
    for shape in shapes:
        check_fits(reference.model, shape, max(batch_sizes), what=reference.name)

    config = session or SessionConfig(device="cpu")
    infer, names, device, providers, ov = _runner(graph, engine, config, precision, openvino_hint)
    if tolerance is None and verified_with is not None and verified_with[0] == device:
        tolerance = verified_with[1]
    tol = tolerance or default_tolerance(device, precision, tf32=config.tf32)
    results = []
    for j, shape in enumerate(shapes):
        size = (shape[1], shape[2]) if sizes else None
        held_out = digits(shape)[1] if use_digits else None
        for i, batch in enumerate(batch_sizes):
            step(f"parity batch {batch}" + (f" at {size[0]}x{size[1]}" if size else ""))
            x = check_batch(shape, batch, i, seed=seed + 97 * j, held_out=held_out)
            refs = forward_outputs(reference.model, x, reference.name)
            outs = infer(x)
            if len(outs) != len(refs):
                raise UserError(f"the graph has {len(outs)} outputs, the PyTorch model returns {len(refs)}")
            for name, r, o in zip(names, refs, outs):
                results.append(compare(r.float().numpy(), o, tol, output=name, size=size))

    acc = _held_out_accuracy(reference, infer, tol) if use_digits else None
    return ParityRecord(
        device=device,
        providers=providers,
        engine=engine,
        inference_precision=ov.inference_precision if ov is not None else None,
        precision=precision,
        inputs=f"{DIGITS} held-out" if use_digits else "random uniform [-1, 1)",
        seed=seed,
        batch_sizes=batch_sizes,
        sizes=list(sizes),
        tolerance=tol,
        passed=all(r.passed for r in results) and (acc is None or acc.passed),
        results=results,
        accuracy=acc,
    )


def check_artifact(
    artifact: Artifact,
    key: VariantKey,
    reference: Prepared,
    graph: bytes,
    *,
    sizes: Sequence[tuple[int, int]] = (),
    **options: object,
) -> ParityRecord:
    """:func:`check` for a graph of an artifact (its bytes, read and verified under the artifact's lock); in
    OpenVINO a variant runs with the precision hint it records (``VariantRecord.openvino_hint``)."""
    if sizes and not artifact.manifest.dynamic_size:
        raise UserError(
            f"{artifact.name} was exported at a fixed size {artifact.manifest.input_shape}: "
            "--input-size applies to graphs exported with --dynamic-size"
        )
    if artifact.manifest.dynamic_size:
        _, h, w = artifact.manifest.input_shape
        sizes = check_sizes((h, w), artifact.manifest.min_size, sizes)
    record = artifact.variant(key)
    if record is not None and (
        record.precision_search is not None
        or (record.quantization is not None and record.quantization.tolerance_reason)
    ):
        # The same verdict as the variant's own verification: the same tolerance, for the same reason.
        options.setdefault("verified_with", (record.parity.device, record.parity.tolerance))
    if record is not None and record.openvino_hint is not None:
        options.setdefault("openvino_hint", record.openvino_hint)
    return check(graph, reference, precision=key.precision, sizes=sizes, **options)  # type: ignore[arg-type]
