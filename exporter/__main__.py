"""``python -m exporter``: parse arguments, call the exporter's library, print. Nothing else.

The work is done by :mod:`exporter.export`, :mod:`exporter.variants`, :mod:`exporter.viewer`
and :mod:`exporter.render`; this module only turns a command line into their calls and
their typed results into lines and tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import options
from .console import Column, CommandParser, Console, fmt, size_text
from .errors import Terminated, UserError, describe_os_error, first_line, run_guarded
from .files import sha256_file
from .opsets import DEFAULT_OPSET, SUPPORTED_OPSETS, validate_opset
from .user_model import is_user_model_ref, parse_input_shape
from .zoo import get_spec, list_models

if TYPE_CHECKING:  # at run time imported where used: --help, --list and mistakes need no pydantic
    from . import artifact as art


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="python -m exporter",
        description="Export a classic CNN (or your own nn.Module) to a checked, simplified ONNX graph "
        "with a dynamic batch dimension (and, with --dynamic-size, dynamic height and width).",
        epilog="examples:\n"
        "  python -m exporter alexnet --opset 17\n"
        "  python -m exporter --list\n"
        "  python -m exporter --all\n"
        "  python -m exporter my_net.py:MyNet --input-shape 3x32x32\n"
        "  python -m exporter resnet18 --weights resnet18-f37072fd.pth\n"
        "  python -m exporter resnet18 --dynamic-size  # symbolic height and width\n"
        "  python -m exporter lenet5 --view            # netron in your browser\n"
        "  python -m exporter lenet5 --render          # artifacts/lenet5/lenet5.svg + .png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", nargs="?", help="zoo name (see --list) or path/to/file.py:Builder")
    p.add_argument(
        "--opset",
        type=int,
        help=f"ONNX opset to write, {SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1} (default {DEFAULT_OPSET})",
    )
    options.artifacts_dir(p, writes=True, old=("--output-dir",))
    options.add(
        p,
        "--output",
        type=Path,
        metavar="DIR",
        help="the artifact's folder itself: write NAME.onnx and manifest.json exactly there (instead of "
        "--artifacts-dir/NAME); a renamed or copied artifact is exported again where it is",
    )
    p.add_argument("--weights", type=Path, help="state_dict .pth to load (plain, or under 'state_dict')")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim; write the graph as traced")
    p.add_argument("--all", action="store_true", help="export every zoo model, continuing past failures")
    p.add_argument("--list", action="store_true", help="list the zoo: name, input, classes, params, GFLOPs")
    options.json_flag(p, help="with --list: print JSON instead of a table")
    options.wide(p)
    p.add_argument("--input-shape", help="per-sample input shape such as 3x32x32 (required for your own model)")
    p.add_argument(
        "--dynamic-size", action="store_true", help="symbolic height and width too (models without a fixed-size layer)"
    )
    p.add_argument("--name", help="artifact name (default: the zoo name, or the builder's name lowercased)")
    p.add_argument(
        "--seed",
        type=int,
        help="seed for a zoo model's random weights (default 0); never replaces an artifact's real weights",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse a graph into which the trace froze Python control flow of forward() (an if on a tensor's "
        "values or on the batch size, int(x.shape[0]), a loop over range(x.shape[0])); without it each is a note",
    )
    o = p.add_argument_group("optimized variants (written beside the fp32 graph)")
    options.precision(
        o,
        choices=[*options.PRECISIONS, "auto"],
        default="fp32",
        help="fp16 (for CUDA) or int8 (for CPU) variant: NAME.fp16.onnx / NAME.int8.onnx; auto: the fastest "
        "int8 (--target cpu) or fp16 (--target cuda) graph within a budget, layers kept float by measured loss "
        "and time (NAME.auto.onnx)",
    )
    o.add_argument(
        "--optimize-for",
        choices=options.TARGETS,
        help="also save onnxruntime's offline-optimized graph for this provider (NAME[.prec].opt-TARGET.onnx)",
    )
    o.add_argument("--calibration-dir", type=Path, help="int8: calibrate on these PNG/JPEG/.npy images")
    o.add_argument(
        "--calibration-method",
        choices=["minmax", "entropy", "percentile"],
        help="int8 calibration method (default minmax)",
    )
    o.add_argument(
        "--reduce-range",
        choices=["auto", "on", "off"],
        help="int8: 7-bit weights; auto (the default) = on for AVX2 CPUs without VNNI",
    )
    o.add_argument("--fp16-io", action="store_true", help="fp16: make inputs/outputs half too (default float32)")
    a = p.add_argument_group(
        "precision search (--precision auto; exit status 4 when no candidate beats fp32, nothing written)"
    )
    options.precision_budget(a)
    a.add_argument(
        "--eval-dir", type=Path, metavar="DIR",
        help="labelled images to judge --max-accuracy-drop on: an ImageFolder (one subfolder per class) or "
        ".npz files with x and y",
    )  # fmt: skip
    a.add_argument(
        "--target",
        choices=options.TARGETS,
        help="where the graph will run (default cpu: int8); cuda: fp16 on onnxruntime's CUDA provider",
    )
    options.engine(a, choices=("onnxruntime", "openvino"), default="onnxruntime",
                   help="the engine latency is measured in (default onnxruntime)")  # fmt: skip
    options.threads(a, help="intra-op threads the candidates are timed with (default: one per core)")
    options.batch_size(a, many=False, default=None,
                       help="batch the candidates are timed and the layers profiled at (default 1); for a GPU or "
                       "a throughput server give its batch: batch 1 understates what int8 or fp16 buys")  # fmt: skip
    g = p.add_argument_group("viewing (netron)")
    g.add_argument("--view", action="store_true", help="serve the graph with netron until Ctrl-C (FILE.onnx works too)")
    options.http_port(g, help="port for --view (default 8080 or the next free one)", old=("--port",))
    g.add_argument("--no-browser", action="store_true", help="with --view: print the URL, do not open a browser")
    g.add_argument("--render", action="store_true", help="write NAME.svg and NAME.png as netron draws the graph")
    return p


#: What a --list column means, said under the table where that column is shown.
_ZOO_NOTES = [
    ("GFLOPs", "GFLOPs: batch 1, 2 FLOPs per multiply-accumulate."),
    ("tv keys", "tv keys: state_dict matches torchvision's."),
]


def list_zoo(out: Console, as_json: bool, wide: bool = False) -> int:
    rows = []
    for name in list_models():
        spec = get_spec(name)
        rows.append(
            {
                "name": name,
                "family": spec.family,
                "input_shape": list(spec.input_shape),
                "num_classes": spec.num_classes,
                "num_params": spec.num_params,
                "gflops": round(spec.gflops, 3),
                "torchvision_compatible": spec.torchvision_name is not None,
                "source": spec.source,
                "description": spec.description,
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2), flush=True)
        return 0
    # what a reader picks a model by comes first; the rest is in --wide and --json
    cols = [Column("name"), Column("input", priority=1), Column("classes", True, 2), Column("params", True, 3)]
    cols += [Column("GFLOPs", True, 4), Column("tv keys", priority=5), Column("description", priority=6)]
    hidden = out.table(
        cols,
        [
            [
                r["name"],
                "x".join(map(str, r["input_shape"])),
                str(r["num_classes"]),
                f"{r['num_params']:,}",
                f"{r['gflops']:.3f}",
                "yes" if r["torchvision_compatible"] else "",
                r["description"],
            ]
            for r in rows
        ],
        title=f"Model zoo ({len(rows)} models)",
        wide=wide,
    )
    if text := " ".join(note for name, note in _ZOO_NOTES if name not in hidden):
        out.paragraph(text)
    return 0


def _shape(dims: list[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _weights_text(m: art.Manifest) -> str:
    w = m.weights
    return {
        "file": f"file {w.path}",
        "random": f"random, seed {w.seed}" + (", BatchNorm calibrated" if w.batchnorm_calibrated else ""),
        "as_given": "as your code built them (unchanged)",
    }[w.kind]


def print_export(out: Console, result) -> None:  # type: ignore[no-untyped-def]
    from . import artifact as art

    m: art.Manifest = result.manifest
    io = ", ".join(f"{i.name} {_shape(i.shape)}" for i in m.inputs) + " -> "
    io += ", ".join(f"{o.name} {_shape(o.shape)}" for o in m.outputs)
    simplified = f"{m.nodes_raw} raw -> {m.nodes} simplified" if m.settings.simplify else f"{m.nodes} (not simplified)"
    weights = _weights_text(m)
    out.print(
        f"exported {m.name} -> {result.onnx_path} ({size_text(m.size_bytes)}, opset {m.settings.opset}, "
        f"{result.seconds:.1f}s)",
        style="bold green",
    )
    out.print(f"  graph    {io}")
    if m.min_size:
        out.print(f"  sizes    any height x width from {m.min_size[0]}x{m.min_size[1]}")
    out.print(f"  nodes    {simplified}: " + ", ".join(f"{k} {v}" for k, v in m.op_counts.items()))
    out.print(f"  params   {m.num_params:,}   weights: {weights}")
    print_parity_summary(out, "onnxruntime CPU vs PyTorch", m.parity)
    for line in result.messages:
        out.print(f"  note     {line}")
    for note in m.trace_notes:
        out.print(f"  frozen   {note}", style="yellow")
    if m.trace_notes:
        out.print(
            "  frozen   the graph computes what these lines decided for the export's example input, for every "
            "input: parity passed at the batches and sizes checked only (--strict refuses such a graph)",
            style="yellow",
        )
    out.print(f"  manifest {art.manifest_path(result.directory)}")


def print_parity_summary(out: Console, what: str, parity: art.ParityRecord) -> None:
    sizes = f" at {len(parity.sizes)} sizes" if parity.sizes else ""
    batches = ", ".join(map(str, parity.batch_sizes))
    out.print(
        f"  parity   {what}, batches {batches}{sizes}, {len(parity.results)} comparisons ({parity.inputs}): "
        f"max abs {fmt(parity.worst('max_abs_err'), '.2e', 'non-finite')}, "
        f"min cosine {fmt(min((r.cosine_min or 0.0) for r in parity.results), '.7f')}"
        + (
            f", min SQNR {min(r.sqnr_db for r in parity.results if r.sqnr_db is not None):.1f} dB"
            if any(r.sqnr_db is not None for r in parity.results) and parity.precision != "fp32"
            else ""
        )
        + (" ok" if parity.passed else " FAILED")
    )
    if parity.accuracy:
        a = parity.accuracy
        out.print(f"  accuracy {a.dataset} (n={a.n}): PyTorch fp32 {a.pytorch_fp32:.2%}, ONNX {a.onnx:.2%}")


def print_variant(out: Console, v) -> None:  # type: ignore[no-untyped-def]
    rec: art.VariantRecord = v.record
    out.print(
        f"variant {v.key} -> {v.path} ({size_text(rec.size_bytes)}, {rec.nodes} nodes, "
        f"{rec.identity_nodes_removed} identity nodes removed, {v.seconds:.1f}s)",
        style="bold green",
    )
    if rec.quantization:
        q = rec.quantization
        out.print(
            f"  int8     QDQ, per-channel {q.per_channel}, reduce_range {q.reduce_range}, "
            f"{q.calibration_method} on {q.calibration_images} images ({q.calibration_source})"
        )
        for reason in q.float_reasons:
            out.print(f"  float    {reason}")
        for attempt in q.attempts:
            out.print(f"  tried    {attempt}")
        if q.tolerance_reason:
            out.print(f"  judged   {q.tolerance_reason}")
    if rec.optimization:
        o = rec.optimization
        out.print(f"  offline  onnxruntime level '{o.level}' for {o.target} ({', '.join(o.providers)})")
    print_parity_summary(out, f"{v.key} vs PyTorch", rec.parity)


#: The export settings a command line can give, flag -> attribute: naming one asks for an export made so.
SETTINGS = {
    "--weights": "weights",
    "--seed": "seed",
    "--opset": "opset",
    "--no-simplify": "no_simplify",
    "--dynamic-size": "dynamic_size",
    "--input-shape": "input_shape",
    "--strict": "strict",
}


def _as_it_stands(args: argparse.Namespace) -> art.Artifact | None:
    """The zoo artifact this command names, where there is one (never a user's model: their code is run
    only when they name it, and then exported again)."""
    from . import artifact as art

    if is_user_model_ref(args.model):
        return None
    directory = args.output or art.artifact_dir(args.name or args.model, args.artifacts_dir)
    try:
        artifact = art.open_artifact(directory)
    except art.ArtifactError:
        return None
    source = artifact.manifest.source
    return artifact if source.kind == "zoo" and source.model == args.model else None


def _changed(args: argparse.Namespace, shape: tuple[int, ...] | None, artifact: art.Artifact) -> list[str]:
    """The settings named on the command line that differ from those ``artifact`` was made with."""
    m, s = artifact.manifest, artifact.manifest.settings
    same_file = (
        args.weights is None
        or m.weights.kind == "file"
        and args.weights.is_file()
        and sha256_file(args.weights) == m.weights.sha256
    )
    differs = {
        "--weights": not same_file,
        "--seed": args.seed is not None and (m.weights.kind != "random" or args.seed != s.seed),
        "--opset": args.opset is not None and args.opset != s.opset,
        "--no-simplify": args.no_simplify and s.simplify,
        "--dynamic-size": args.dynamic_size and not s.dynamic_size,
        "--input-shape": shape is not None and list(shape) != s.input_shape,
        "--strict": args.strict and bool(m.trace_notes),
    }
    return [flag for flag, changed in differs.items() if changed]


def _export_settings(args: argparse.Namespace, shape: tuple[int, ...] | None, recorded: art.Manifest | None) -> dict:
    """export_model's settings: the command line's (defaults for what it does not name), or, to make
    an artifact again as it stands, exactly the ones it ``recorded`` (its weights file included)."""
    if recorded is None:
        return dict(opset=args.opset if args.opset is not None else DEFAULT_OPSET, weights=args.weights,
                    simplify=not args.no_simplify, input_shape=shape, seed=args.seed or 0,
                    dynamic_size=args.dynamic_size, strict=args.strict)  # fmt: skip
    s = recorded.settings
    if s.weights and not Path(s.weights).is_file():
        raise UserError(
            f"{recorded.name} was exported with the weights {s.weights}, which are gone: pass --weights FILE"
        )
    return dict(opset=s.opset, weights=s.weights, simplify=s.simplify, input_shape=tuple(s.input_shape),
                seed=s.seed, dynamic_size=s.dynamic_size, strict=args.strict)  # fmt: skip


def _variant_options(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .variants import VariantOptions

    return VariantOptions(
        calibration_dir=args.calibration_dir,
        calibration_method=args.calibration_method or "minmax",
        fp16_io=args.fp16_io,
        reduce_range={"auto": None, "on": True, "off": False}[args.reduce_range or "auto"],
    )


def _check_variant_flags(args: argparse.Namespace) -> None:
    """Refuse flags that would be ignored, and missing inputs, before any export starts."""
    int8_only = [f for f, v in (("--calibration-dir", args.calibration_dir), ("--calibration-method",
                 args.calibration_method), ("--reduce-range", args.reduce_range)) if v is not None]  # fmt: skip
    if int8_only and args.precision not in ("int8", "auto"):
        raise UserError(f"{', '.join(int8_only)} go(es) with --precision int8 or auto")
    search_only = [f for f, v in (("--max-loss-db", args.max_loss_db), ("--min-cosine", args.min_cosine),
                   ("--max-accuracy-drop", args.max_accuracy_drop), ("--eval-dir", args.eval_dir),
                   ("--target", args.target), ("--threads", args.threads), ("--batch-size", args.batch_size),
                   ("--engine", None if args.engine == "onnxruntime" else args.engine)) if v is not None]  # fmt: skip
    if search_only and args.precision != "auto":
        raise UserError(f"{', '.join(search_only)} go(es) with --precision auto")
    if args.precision == "auto":
        from runtime.precision.budget import budget_from
        from runtime.precision.search import check_batch_size, check_target

        budget_from(args.max_loss_db, args.min_cosine, args.max_accuracy_drop)  # a bad budget: one line, before work
        if args.batch_size is not None:
            check_batch_size(args.batch_size)
        check_target(args.target or "cpu", args.engine)  # --target cuda without a usable CUDA provider, too
    if args.precision == "auto" and (args.optimize_for or args.all):
        raise UserError("--precision auto searches one model's graph: without --optimize-for and --all")
    if args.eval_dir is not None and not args.eval_dir.exists():
        raise UserError(f"evaluation set not found: {args.eval_dir}")
    if args.precision == "auto" and args.eval_dir is not None:
        from runtime.precision.budget import check_eval_size, default_budget

        from .data import count_labelled

        # counted, not decoded (the input shape may not be known yet): too few images for the budget is one
        # line before anything is exported or searched
        budget = budget_from(args.max_loss_db, args.min_cosine, args.max_accuracy_drop) or default_budget(True)
        check_eval_size(budget, count_labelled(args.eval_dir))
    if args.fp16_io and args.precision != "fp16":
        raise UserError("--fp16-io goes with --precision fp16")
    if args.calibration_dir is not None and not args.calibration_dir.is_dir():
        raise UserError(f"calibration directory not found: {args.calibration_dir}")
    if args.http_port is not None:
        from .viewer import validate_port

        validate_port(args.http_port)


def _check_render() -> None:
    from .render import render_available

    reason = render_available()
    if reason:
        raise UserError(f"--render: {reason}")


def _render(out: Console, path: Path) -> None:
    from .render import render_graph

    Console(sys.stderr).print(f"rendering {path.name} in headless Chromium")
    r = render_graph(path)
    out.print(
        f"rendered {r.svg_path} and {r.png_path}: {r.nodes_drawn} operator nodes drawn "
        f"(graph has {r.nodes_in_graph}), {len(r.op_types_drawn)} op types, "
        f"{r.batch_edge_labels} edges labelled with the symbolic batch",
        style="bold green",
    )


def export_one(args: argparse.Namespace, out: Console, err: Console) -> int:
    from . import artifact as art
    from .export import export_model
    from .graph import load_onnx
    from .variants import build_variant

    if args.render:
        _check_render()
    if args.model.endswith(".onnx"):
        if args.weights or args.input_shape or args.dynamic_size or args.output:
            raise UserError(
                "an .onnx file is served or rendered as it is: --weights, --input-shape and --output do not apply"
            )
        if not (args.view or args.render):
            raise UserError(f"{args.model} is already ONNX: add --view to serve it or --render to draw it")
        path = Path(args.model)
        load_onnx(path)
    else:
        shape = parse_input_shape(args.input_shape) if args.input_shape else None
        key = art.VariantKey(args.precision, args.optimize_for)
        # A variant, a view or a render is made from the artifact as it stands (its weights, whatever
        # they are); only a setting named on the command line that differs from it exports again.
        artifact = _as_it_stands(args) if (args.view or args.render or not key.is_base) else None
        if artifact is not None and _changed(args, shape, artifact):
            artifact = None
        stale = artifact.stale_reason() if artifact is not None else None
        if artifact is not None and stale is None:
            out.print(
                f"reusing {artifact.directory} as it stands (current; weights: {_weights_text(artifact.manifest)})"
            )
            directory, path = artifact.directory, artifact.path()
        else:
            if stale:
                err.print(f"{stale}: exporting {artifact.name} again with its recorded settings")  # type: ignore[union-attr]
            result = export_model(
                args.model,
                output_dir=None if args.output else args.artifacts_dir,
                directory=args.output,
                name=args.name,
                on_step=lambda msg: err.print(f"{args.name or args.model}: {msg}"),
                **_export_settings(args, shape, artifact.manifest if artifact is not None else None),
            )
            print_export(out, result)
            directory, path = result.directory, result.onnx_path
        prepared = None
        if not key.is_base:
            if is_user_model_ref(args.model):
                from .reference import rebuild

                prepared = rebuild(art.open_artifact(directory).manifest, args.model)
            if key.precision == "auto":
                return _search(args, out, err, directory, prepared)
            v = build_variant(
                directory,
                key,
                options=_variant_options(args),
                reference=prepared,
                on_step=lambda msg: err.print(f"{args.name or args.model} {key}: {msg}"),
            )
            print_variant(out, v)
            path = v.path
    if args.render:
        _render(out, path)
    if args.view:
        from .viewer import view

        try:
            view(path, port=args.http_port, open_browser=not args.no_browser, announce=out.print)
        except Terminated:  # what was exported is complete by now: only the viewer stopped
            err.print("interrupted: the viewer stopped")
            return 143
    return 0


def _search(args: argparse.Namespace, out: Console, err: Console, directory: Path, prepared) -> int:  # type: ignore[no-untyped-def]
    """``--precision auto``: the search (runtime.precision), its table, and exit 4 where nothing paid."""
    from runtime.precision import NOT_WORTH_IT, SearchConfig, budget_from, search_precision

    from . import artifact as art
    from .data import load_labelled

    budget = budget_from(args.max_loss_db, args.min_cosine, args.max_accuracy_drop)
    eval_set = None
    if args.eval_dir is not None:
        eval_set = load_labelled(args.eval_dir, tuple(art.open_artifact(directory).manifest.input_shape))
    config = SearchConfig(
        budget=budget,
        target=args.target or "cpu", engine=args.engine, threads=args.threads,
        batch_size=1 if args.batch_size is None else args.batch_size,
        calibration=_variant_options(args), eval_set=eval_set, eval_name=str(args.eval_dir) if args.eval_dir else None,
    )  # fmt: skip
    outcome = search_precision(
        directory, config, reference=prepared, on_step=lambda msg: err.print(f"{args.name or args.model} auto: {msg}")
    )
    print_search(out, outcome, args.wide)
    return 0 if outcome.written else NOT_WORTH_IT


#: Under a --precision auto table without its top-1 column: why it is missing, and how to have it.
NO_TOP1 = "top-1 drop: not measured, no labelled images (give --eval-dir DIR)"


def print_search(out: Console, outcome, wide: bool = False) -> None:  # type: ignore[no-untyped-def]
    """The --precision auto table (every candidate's figures and verdict), its notes and what was written."""
    s = outcome.search
    # without a labelled set no candidate has a top-1 figure: an empty column would read as a blank result
    top1 = any(c.accuracy_drop_pp is not None for c in s.candidates)
    cols = [Column("candidate", wrap=True), Column("float", True), Column("SQNR dB", True), Column("cosine", True)]
    cols += [Column("top-1 drop", True)] if top1 else []
    cols += [Column("verdict"), Column("ms", True), Column("speed-up (95%)", True)]
    rows = []
    for c in s.candidates:
        speed = f"{c.speedup:.2f}x ({c.speedup_low:.2f}-{c.speedup_high:.2f})" if c.speedup is not None else ""
        drop = [fmt(c.accuracy_drop_pp, "g", "")] if top1 else []
        rows.append([
            c.label + (" <- chosen" if c.chosen else ""), str(len(c.float_layers)), fmt(c.sqnr_db, ".1f", "exact"),
            fmt(c.cosine_min, ".4f"), *drop, "passed" if c.passed else "failed", fmt(c.latency_ms, ".3f", ""), speed,
        ])  # fmt: skip
    title = f"{outcome.name} --precision auto: {s.budget}; fp32 {s.fp32_ms:.3f} ms "
    where = f"{s.engine} on CUDA" if s.device == "cuda" else f"{s.engine}"
    title += f"({s.fp32_low_ms:.3f}-{s.fp32_high_ms:.3f}), {where}, batch {s.batch_size}, {s.threads} threads"
    if len(s.judged_in) > 1:  # the engine timed is also the engine judged: say with which precision hint
        # a bf16 twin was judged and timed with the bf16 hint instead: the search-wide hint alone would hide it
        twins = s.inference_precision != "bf16" and any(c.openvino_hint == "bf16" for c in s.candidates)
        also = "; bf16 where the candidate says so" if twins else ""
        hint = f" ({s.inference_precision} hint{also})" if s.inference_precision else ""
        title += f"; judged in {' and '.join(s.judged_in)}{hint}, the worst figures shown"
    out.table(cols, rows, title=title, wide=wide)
    if s.candidates and not top1:
        out.paragraph(NO_TOP1)  # short: one line at any width a table fits
    for note in s.notes:
        out.paragraph(f"note: {note}", style="yellow")
    if not outcome.written:
        out.paragraph(outcome.message, style="yellow")  # "int8 does not pay here: ...": about 190 characters
        return
    out.print(f"variant auto -> {outcome.path} ({outcome.seconds:.0f}s)", style="bold green")
    for reason in s.float_reasons:
        out.print(f"  float    {reason}")
    if outcome.record.openvino_hint == "bf16":  # every OpenVINO compile of it honours the recorded hint
        out.print("  openvino its float layers run in bf16 there, as verified and timed (openvino_hint bf16); "
                  "onnxruntime runs them in fp32")  # fmt: skip
    if outcome.plot is not None:
        out.print(f"  pareto   {outcome.plot}")
    print_parity_summary(out, "auto vs PyTorch", outcome.record.parity)


def export_all(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Export every zoo model; a failure of one (a user error or a fault such as a full disk) is
    recorded and the rest still run; the summary names each failure."""
    from . import artifact as art
    from .export import export_model
    from .pooling import FixedSizeModel
    from .variants import build_variant

    names = list_models()
    rows: list[list[object]] = []
    failures: list[tuple[str, str]] = []
    fixed: list[tuple[str, str]] = []
    key = art.VariantKey(args.precision, args.optimize_for)
    with err.progress(len(names), "exporting the zoo") as progress:
        for name in names:
            progress.update(f"exporting {name}")
            try:
                r = export_model(name, output_dir=args.artifacts_dir, **_export_settings(args, None, None))
                if not key.is_base:
                    progress.update(f"{name}: {key} variant")
                    build_variant(r.directory, key, options=_variant_options(args))
                if args.render:
                    from .render import render_graph

                    progress.update(f"rendering {name}")
                    render_graph(r.onnx_path)
                m = r.manifest
                rows.append(
                    [
                        name,
                        ("ok", "green"),
                        f"{m.nodes_raw} -> {m.nodes}",
                        size_text(m.size_bytes),
                        fmt(m.parity.worst("max_abs_err"), ".1e"),
                        f"{r.seconds:.1f}",
                    ]
                )
            except (KeyboardInterrupt, SystemExit):
                raise
            except FixedSizeModel as exc:  # with --dynamic-size: expected for models with a fixed-size layer
                fixed.append((name, str(exc)))
                rows.append([name, ("fixed size", "yellow"), "", "", "", ""])
            except Exception as exc:  # one model's failure, user error or fault, must not stop the others
                if isinstance(exc, UserError):
                    message = str(exc)
                elif isinstance(exc, OSError):
                    message = describe_os_error(exc, f"writing {name}")
                else:
                    message = f"{type(exc).__name__}: {first_line(exc)}"
                failures.append((name, message))
                rows.append([name, ("FAILED", "red"), "", "", "", ""])
            progress.advance()
    cols = [Column("model"), Column("status"), Column("nodes raw -> simplified", True), Column("size", True)]
    cols += [Column("max abs err", True), Column("seconds", True)]
    done = len(names) - len(failures) - len(fixed)
    title = f"Exported {done}/{len(names)} models to {args.artifacts_dir} (opset {args.opset or DEFAULT_OPSET})"
    if fixed:
        title += f"; {len(fixed)} have a fixed input size and no --dynamic-size graph"
    out.table(cols, rows, title=title)  # type: ignore[arg-type]
    for name, message in fixed:
        out.print(f"fixed size {name}: {message}")
    for name, message in failures:
        out.print(f"FAILED {name}: {message}", style="red")
    return 1 if failures else 0


def _dispatch(args: argparse.Namespace) -> int:
    out, err = Console(sys.stdout), Console(sys.stderr)
    if args.json and not args.list:
        raise UserError("--json goes with --list")
    if args.list:
        return list_zoo(out, args.json, args.wide)
    if (args.http_port is not None or args.no_browser) and not args.view:
        raise UserError("--http-port and --no-browser go with --view")
    if args.opset is not None:
        validate_opset(args.opset)
    _check_variant_flags(args)
    if args.name is not None:
        from .artifact import validate_name

        validate_name(args.name)
    if args.output is not None and (args.all or Path(args.artifacts_dir) != options.ARTIFACTS_DIR):
        raise UserError("--output names one artifact's folder: it goes with one model, not --all or --artifacts-dir")
    if args.all:
        if args.model:
            raise UserError("give either a model name or --all, not both")
        if args.weights or args.input_shape or args.name or args.view:
            raise UserError("--weights, --input-shape, --name and --view apply to one model, not --all")
        if args.render:
            _check_render()
        return export_all(args, out, err)
    if not args.model:
        raise UserError("name a model (see --list), a file.py:Builder, or use --all")
    if not args.model.endswith(".onnx") and not is_user_model_ref(args.model):
        get_spec(args.model)  # a mistyped name is one line, before torch is imported
    return export_one(args, out, err)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: _dispatch(args), interrupted="nothing partial was written")


if __name__ == "__main__":
    sys.exit(main())
