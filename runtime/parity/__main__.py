"""``python -m runtime.parity``: check an artifact's graph against PyTorch and print the agreement.

A command: it parses arguments, calls :mod:`runtime.parity` and :mod:`runtime.resolve`, prints.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from exporter import options
from exporter.console import Column, CommandParser, Console, fmt, stdout_kept_for_output
from exporter.errors import UserError, run_guarded
from exporter.files import strict_json
from exporter.user_model import parse_input_sizes

from ..session_config import SessionConfig
from . import DEFAULT_BATCH_SIZES

if TYPE_CHECKING:
    from exporter import artifact as art

    from .graph_file import GraphFile


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="python -m runtime.parity",
        description="Check an exported graph against its PyTorch model: every output, several batch sizes.",
        epilog="examples:\n"
        "  python -m runtime.parity resnet18\n"
        "  python -m runtime.parity artifacts/lenet5/lenet5.int8.onnx\n"
        "  python -m runtime.parity mynet --reference my_net.py:MyNet\n"
        "  python -m runtime.parity resnet18_dyn --input-size 224x224 256x300\n"
        "  python -m runtime.parity resnet18 --graph resnet18.slim.onnx   # a graph another tool rewrote",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("artifact", help="zoo or artifact name, artifact folder, or NAME[.variant].onnx beside its manifest")
    options.precision(p, help="variant to check: fp32 (default), fp16, int8, or e.g. int8.opt-cpu")
    options.batch_size(
        p,
        default=DEFAULT_BATCH_SIZES,
        help=f"batch sizes to compare at (default {' '.join(map(str, DEFAULT_BATCH_SIZES))})",
        old=("--batch-sizes",),
    )
    p.add_argument(
        "--input-size",
        nargs="+",
        action="extend",
        metavar="HxW",
        help="input sizes for a --dynamic-size artifact (default: its export size, 256x300, 193x211, 320x320, minimum)",
    )
    options.device(p)
    p.add_argument(
        "--engine",
        choices=["onnxruntime", "tensorrt"],
        default="onnxruntime",
        help="tensorrt: build a TensorRT engine (onnxruntime's TensorRT provider, CUDA) of the precision asked "
        "(fp16 from the fp32 graph, int8 from the QDQ graph) and check its outputs; --explain then compares its "
        "layers with the fp32 graph on onnxruntime's CUDA provider",
    )
    p.add_argument("--atol", type=float, help="override the default absolute tolerance")
    p.add_argument("--rtol", type=float, help="override the default relative tolerance")
    p.add_argument(
        "--inputs",
        choices=["auto", "random", "digits"],
        default="auto",
        help="what to feed (auto: digits for digits-trained weights)",
    )
    p.add_argument(
        "--reference", metavar="FILE.py:Builder", help="your own model's code, to compare your artifact against"
    )
    options.artifacts_dir(p, writes=True)
    options.no_rebuild(p)
    options.json_flag(p, help="print the report as JSON")
    options.wide(p)
    p.add_argument(
        "--graph",
        type=Path,
        metavar="FILE.onnx",
        help="check this ONNX file (rewritten by another tool, say) against the artifact's PyTorch reference, with "
        "the same inputs and tolerances; the artifact is only read, never rebuilt (--precision picks whose "
        "tolerance applies)",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="int8/fp16: also compare every layer with the fp32 graph (per-layer SQNR), to see which loses precision",
    )
    return p


def print_report(out: Console, name: str, path: Path, record: art.ParityRecord, *, wide: bool = False) -> None:
    tol = record.tolerance
    sized = bool(record.sizes)
    out.print(
        f"{name} [{record.precision}, {record.inputs} inputs]: {path} on {record.device} "
        f"({', '.join(record.providers)})"
    )
    out.print(
        "tolerance: "
        + (f"atol {tol.atol:g} + rtol {tol.rtol:g}*|ref|, " if tol.atol is not None else "")
        + f"cosine >= {tol.min_cosine:g}"
        + (f", SQNR >= {tol.min_sqnr_db:g} dB" if tol.min_sqnr_db is not None else "")
        + (f", top-1 >= {tol.min_top1:g}" if tol.min_top1 is not None else "")
    )
    cols = [Column("output"), Column("batch", True), *([Column("size", True)] if sized else [])]
    cols += [Column("max abs err", True), Column("max rel err", True, 2), Column("mean abs err", True, 3)]
    cols += [Column("cosine", True), Column("SQNR dB", True), Column("top-1", True, 1), Column("top-5", True, 3)]
    cols += [Column("needed atol", True, 2), Column("needed rtol", True, 2), Column("result")]
    rows = []
    for r in record.results:
        rows.append(
            [
                r.output,
                str(r.batch_size),
                *([f"{r.height}x{r.width}"] if sized else []),
                fmt(r.max_abs_err, ".2e", "non-finite"),
                fmt(r.max_rel_err, ".2e", "non-finite"),
                fmt(r.mean_abs_err, ".2e", "non-finite"),
                fmt(r.cosine_min, ".7f", "non-finite"),
                fmt(r.sqnr_db, ".1f", "exact") if r.max_abs_err is not None else "non-finite",
                fmt(r.top1_agreement, ".1%"),
                fmt(r.top5_agreement, ".1%"),
                fmt(r.needed_atol, ".1e"),
                fmt(r.needed_rtol, ".1e"),
                ("pass", "green") if r.passed else ("FAIL", "red"),
            ]
        )
    hidden = out.table(cols, rows, wide=wide)
    if tol.atol is not None and "needed atol" not in hidden:
        # without this, "needed atol 0.0e+00" beside "max abs err 8.6e-09" reads as a contradiction
        out.print(f"needed atol: the smallest atol that passes with rtol {tol.rtol:g} (0: rtol alone covers all)")
        if "needed rtol" not in hidden:
            out.print(f"needed rtol: the smallest rtol that passes with atol {tol.atol:g}")
    if record.accuracy:
        a = record.accuracy
        out.print(
            f"accuracy on {a.dataset} (n={a.n}): PyTorch fp32 {a.pytorch_fp32:.2%}, "
            f"ONNX {record.precision} {a.onnx:.2%}, top-1 agreement {a.top1_agreement:.2%}"
        )
    for f in record.failures():
        out.print(f"FAIL {f}", style="red")


def print_explanation(out: Console, e, *, wide: bool = False) -> None:  # type: ignore[no-untyped-def]
    """The per-layer table of ``--explain`` (graph order), then the layer that loses the most."""
    worst = e.worst(1)
    int8 = e.precision == "int8"
    rounded = f"{e.input_sqnr_db:.1f} dB" if e.input_sqnr_db is not None else "exact"
    # short lines: the table below fits 100 characters, so must what explains it
    out.print(f"per layer, {e.precision} vs fp32 graph on the same {sum(e.batch_sizes)} {e.inputs} inputs")
    out.print(f"the input as the {e.precision} graph reads it: SQNR {rounded}")
    out.print("loss dB: the SQNR of the layer's inputs minus its own (the precision the layer itself loses)")
    if int8:
        out.print("(float): a layer the int8 graph computes in float")
    cols = [Column("#", True), Column("layer"), Column("op"), Column("tensor", priority=3), Column("shape", priority=2)]
    cols += [Column("SQNR dB", True), Column("loss dB", True), Column("cosine", True, 1)]
    cols += [Column("max abs err", True, 2), Column("ref max", True, 3), Column("mark")]
    rows = [
        [
            str(r.index),
            r.node,
            r.op_type + (" (float)" if int8 and not r.quantized else ""),
            r.tensor,
            "x".join(map(str, r.shape)),
            fmt(r.sqnr_db, ".1f", "exact" if r.max_abs_err is not None else "non-finite"),
            fmt(r.loss_db, ".1f"),
            fmt(r.cosine_min, ".5f", "non-finite"),
            fmt(r.max_abs_err, ".2e", "non-finite"),
            f"{r.ref_max_abs:.2e}",
            ("worst", "red") if worst and r.index == worst[0].index else "",
        ]
        for r in e.layers
    ]
    out.table(cols, rows, wide=wide)
    for r in worst:
        out.print(
            f"loses most: {r.node} ({r.op_type}): {r.loss_db:.1f} dB, "
            f"SQNR {fmt(r.input_sqnr_db, '.1f')} dB in -> {fmt(r.sqnr_db, '.1f')} dB out"
        )
    low = e.lowest_sqnr()
    if low is not None:
        out.print(f"lowest SQNR: {low.node} ({low.op_type}) {low.sqnr_db:.1f} dB")
    if e.unmatched:
        out.print(f"no fp32 tensor of the same name, not compared: {', '.join(e.unmatched)}")


def _run(args: argparse.Namespace) -> int:
    if not args.json:
        return _check(args, Console(sys.stdout))
    # The report is the only thing on stdout: anything the user's model code (or a library) prints
    # or writes to descriptor 1 while it is imported or run goes to stderr instead of corrupting the JSON.
    with stdout_kept_for_output() as stdout:
        return _check(args, Console(stdout))


def _tensorrt_graph(key: art.VariantKey | None) -> tuple[art.VariantKey, art.VariantKey]:
    """``--engine tensorrt``: the graph TensorRT builds from, and the precision its engine computes in."""
    key = key or art.BASE
    if key.optimize_for:
        raise UserError(f"--engine tensorrt builds from the fp32 or int8 QDQ graph, not the optimized {key} graph")
    return (art.VariantKey("int8") if key.precision == "int8" else art.BASE), key


@dataclass
class _Target:
    """The graph a parity run checks: an artifact's recorded graph (resolved) or any file (``--graph``)."""

    artifact: art.Artifact
    key: art.VariantKey
    graph: bytes
    path: Path
    file: GraphFile | None = None


def _target(args: argparse.Namespace, key: art.VariantKey | None, err: Console) -> _Target:
    if args.graph is None:
        from ..resolve import resolve

        resolved = resolve(
            args.artifact,
            key=key,
            artifacts_dir=args.artifacts_dir,
            rebuild=not args.no_rebuild,
            reference=args.reference,
            say=err.print,
        )
        return _Target(resolved.artifact, resolved.key, resolved.graph, resolved.path)
    from .graph_file import graph_key, open_artifact_as_recorded, open_graph_file

    artifact, named = open_artifact_as_recorded(args.artifact, args.artifacts_dir)
    file, data = open_graph_file(args.graph, artifact)
    return _Target(artifact, graph_key(key, named, file), data, file.path, file)


def _check_explain(args: argparse.Namespace, key: art.VariantKey | None) -> None:
    """``--explain`` on a graph it cannot explain: one line before any graph is resolved, built or run."""
    if not args.explain:
        return
    from exporter import artifact as art

    from .explainable import explainable

    named = key
    if named is None and args.artifact.endswith(".onnx") and args.graph is None:
        with contextlib.suppress(art.ArtifactError):  # a bad path is reported where it is resolved
            named = art.locate(args.artifact, args.artifacts_dir).key
    problem = explainable(named, foreign=args.graph is not None)
    if problem:
        raise UserError(problem)


def _check(args: argparse.Namespace, out: Console) -> int:
    from exporter import artifact as art

    err = Console(sys.stderr)
    key = art.VariantKey.parse(args.precision) if args.precision else None
    _check_explain(args, key)
    engine_key = None
    if args.graph is not None and args.engine == "tensorrt":
        raise UserError("--graph is checked on onnxruntime: --engine tensorrt builds from the artifact's own graphs")
    if args.engine == "tensorrt":
        if args.device == "cpu":
            raise UserError("--engine tensorrt runs on CUDA: it cannot go with --device cpu")
        from ..sessions import tensorrt_missing

        missing = tensorrt_missing()  # before any graph is resolved or built for it
        if missing:
            raise UserError(f"tensorrt: not available ({missing})")
        key, engine_key = _tensorrt_graph(key)
    sizes = parse_input_sizes(args.input_size or [])
    if any(b < 1 for b in args.batch_size):
        raise UserError(f"batch sizes must be at least 1, got {args.batch_size}")
    resolved = _target(args, key, err)
    # torch and onnxruntime only now that the arguments and the artifact are known to be right
    from exporter.reference import rebuild

    from . import check_artifact

    manifest = resolved.artifact.manifest
    reference = rebuild(manifest, args.reference)
    for note in reference.notes:
        err.print(f"note: {note}")
    if manifest.trace_notes:
        more = f" (and {len(manifest.trace_notes) - 1} more)" if len(manifest.trace_notes) > 1 else ""
        err.print(f"note: the export's trace froze Python control flow of forward() at {manifest.trace_notes[0]}{more}")
    variant = resolved.artifact.variant(resolved.key)
    if variant is not None and variant.quantization is not None and variant.quantization.tolerance_reason:
        err.print(f"note: tolerance as in the variant's own verification: {variant.quantization.tolerance_reason}")
    from ..compare import default_tolerance, override
    from ..sessions import create_session

    config = SessionConfig(device=args.device)
    checked = resolved.key
    if engine_key is not None:
        config = SessionConfig(device="cuda", tensorrt=engine_key.precision)
        checked = engine_key
    tolerance = None
    if args.atol is not None or args.rtol is not None:
        _, info = create_session(resolved.graph, config)
        tolerance = override(default_tolerance(info.device, checked.precision), args.atol, args.rtol)
    record = check_artifact(
        resolved.artifact,
        checked,
        reference,
        resolved.graph,
        sizes=sizes,
        batch_sizes=args.batch_size,
        session=config,
        tolerance=tolerance,
        inputs=args.inputs,
        on_step=err.print if not args.json else None,
    )
    explained = None
    if args.explain:
        from .explain import explain_artifact

        explained = explain_artifact(
            resolved.artifact, checked, resolved.graph, reference,
            batch_sizes=args.batch_size, inputs=args.inputs, session=config,
            reference_session=replace(config, tensorrt=None), foreign=resolved.file is not None,
        )  # fmt: skip
    if args.json:
        doc = {"artifact": manifest.name, "graph": str(resolved.path), "variant": str(resolved.key)}
        if resolved.file is not None:
            doc = {**resolved.file.to_json(), **doc}
        extra = {"explain": explained.model_dump(mode="json")} if explained else {}
        out.stream.write(strict_json({**doc, **record.model_dump(mode="json"), **extra}))
        out.stream.flush()
    else:
        if resolved.file is not None:
            out.print(resolved.file.statement(manifest.name), style="bold" if resolved.file.matches else "bold yellow")
        print_report(out, manifest.name, resolved.path, record, wide=args.wide)
        if explained:
            print_explanation(out, explained, wide=args.wide)
    if not record.passed:
        from exporter.reference import nondeterminism

        reason = nondeterminism(reference)  # the model disagreeing with itself is not the graph's fault
        if reason:
            err.print(f"note: {manifest.name}: {reason}")
    return 0 if record.passed else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: _run(args), interrupted="no report")


if __name__ == "__main__":
    sys.exit(main())
