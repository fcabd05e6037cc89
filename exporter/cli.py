"""``python -m exporter``: argument parsing and terminal output over the exporter's library API."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import artifacts
from .errors import UserError, run_guarded
from .graph import load_onnx
from .trace import DEFAULT_OPSET, SUPPORTED_OPSETS, validate_opset
from .user_model import is_user_model_ref, parse_input_shape
from .zoo import get_spec, list_models, model_stats

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m exporter",
        description="Export a classic CNN (or your own nn.Module) to a checked, simplified ONNX graph "
        "with a dynamic batch dimension.",
        epilog="examples:\n"
        "  python -m exporter alexnet --opset 17\n"
        "  python -m exporter --list\n"
        "  python -m exporter --all\n"
        "  python -m exporter my_net.py:MyNet --input-shape 3x32x32\n"
        "  python -m exporter resnet18 --weights resnet18-f37072fd.pth\n"
        "  python -m exporter lenet5 --view            # netron in your browser\n"
        "  python -m exporter lenet5 --render          # artifacts/lenet5/lenet5.svg + .png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", nargs="?", help="zoo name (see --list) or path/to/file.py:Builder")
    p.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset to write, {SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1} (default {DEFAULT_OPSET})",
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        default=artifacts.DEFAULT_OUTPUT_DIR,
        help="where NAME/NAME.onnx and NAME/manifest.json go (default artifacts/)",
    )
    p.add_argument("--weights", type=Path, help="state_dict .pth to load (plain, or under 'state_dict')")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim; write the graph as traced")
    p.add_argument("--all", action="store_true", help="export every zoo model, continuing past failures")
    p.add_argument("--list", action="store_true", help="list the zoo: name, input, classes, params, GFLOPs")
    p.add_argument("--json", action="store_true", help="with --list: print JSON instead of a table")
    p.add_argument("--input-shape", help="per-sample input shape such as 3x32x32 (required for your own model)")
    p.add_argument("--name", help="artifact name (default: the zoo name, or the builder's name lowercased)")
    p.add_argument("--seed", type=int, default=0, help="seed for random weights and test inputs (default 0)")
    o = p.add_argument_group("optimized variants (written beside the fp32 graph)")
    o.add_argument(
        "--precision",
        choices=["fp32", "fp16", "int8"],
        default="fp32",
        help="fp16 (for CUDA) or int8 (for CPU) variant: NAME.fp16.onnx / NAME.int8.onnx",
    )
    o.add_argument(
        "--optimize-for",
        choices=["cpu", "cuda"],
        help="also save onnxruntime's offline-optimized graph for this provider (NAME[.prec].opt-TARGET.onnx)",
    )
    o.add_argument(
        "--calibration-dir", type=Path, help="int8: calibrate on these PNG/JPEG/.npy images (default: digits)"
    )
    o.add_argument(
        "--calibration-method",
        choices=["minmax", "entropy", "percentile"],
        default="minmax",
        help="int8 calibration method (default minmax)",
    )
    o.add_argument(
        "--reduce-range",
        choices=["auto", "on", "off"],
        default="auto",
        help="int8: 7-bit weights; auto = on for AVX2 CPUs without VNNI",
    )
    o.add_argument("--fp16-io", action="store_true", help="fp16: make inputs/outputs half too (default float32)")
    g = p.add_argument_group("viewing (netron)")
    g.add_argument(
        "--view",
        action="store_true",
        help="serve the graph with netron until Ctrl-C (NAME reuses a current artifact; FILE.onnx works too)",
    )
    g.add_argument(
        "--port", type=int, help="port for --view (default 8080 or the next free one; a busy --port is an error)"
    )
    g.add_argument("--no-browser", action="store_true", help="with --view: print the URL, do not open a browser")
    g.add_argument(
        "--render",
        action="store_true",
        help="write NAME.svg and NAME.png as netron draws the graph (headless Chromium via playwright)",
    )
    return p


def list_zoo(as_json: bool) -> int:
    rows = []
    for name in list_models():
        spec = get_spec(name)
        stats = model_stats(spec)
        rows.append(
            {
                "name": name,
                "family": spec.family,
                "input_shape": list(spec.input_shape),
                "num_classes": spec.num_classes,
                "num_params": stats["num_params"],
                "gflops": round(float(stats["gflops"]), 3),
                "torchvision_compatible": spec.torchvision_name is not None,
                "source": spec.source,
                "description": spec.description,
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title=f"Model zoo ({len(rows)} models)")
    for col, justify in [
        ("name", "left"),
        ("input", "left"),
        ("classes", "right"),
        ("params", "right"),
        ("GFLOPs", "right"),
        ("tv keys", "center"),
    ]:
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    wide = out.width >= 130
    if wide:
        table.add_column("description", overflow="fold")
    for r in rows:
        table.add_row(
            r["name"],
            "x".join(map(str, r["input_shape"])),
            str(r["num_classes"]),
            f"{r['num_params']:,}",
            f"{r['gflops']:.3f}",
            "yes" if r["torchvision_compatible"] else "",
            *([r["description"]] if wide else []),
        )
    out.print(table)
    out.print(
        "GFLOPs: batch 1, 2 FLOPs per multiply-accumulate. tv keys: state_dict matches torchvision's."
        + ("" if wide else " Descriptions: widen the terminal or use --json.")
    )
    return 0


def _print_result(result) -> None:  # type: ignore[no-untyped-def]
    m = result.manifest
    io = (
        ", ".join(f"{i['name']} {i['shape']}" for i in m["inputs"])
        + " -> "
        + ", ".join(f"{o['name']} {o['shape']}" for o in m["outputs"])
    )
    nodes = m["nodes"]
    node_text = (
        f"{nodes['raw']} raw -> {nodes['simplified']} simplified"
        if nodes["simplified"] is not None
        else f"{nodes['raw']} (not simplified)"
    )
    out.print(
        f"[bold green]exported[/] {m['name']} -> {result.onnx_path} ({m['size_bytes'] / 1e6:.1f} MB, "
        f"opset {m['opset']}, {result.seconds:.1f}s)"
    )
    out.print(f"  graph   {io}")
    out.print(f"  nodes   {node_text}: " + ", ".join(f"{k} {v}" for k, v in m["op_counts"].items()))
    out.print(
        f"  params  {m['num_params']:,}   weights: "
        + (f"file {m['weights']['path']}" if m["weights"]["kind"] == "file" else f"random, seed {m['weights']['seed']}")
    )
    for r in m["parity"]["results"]:
        out.print(
            f"  parity  onnxruntime CPU vs PyTorch, batch {r['batch_size']}: max abs {r['max_abs_err']:.2e}, "
            f"max rel {r['max_rel_err']:.2e}, cosine {r['cosine_min']:.7f}, "
            f"top-1 {r['top1_agreement']:.0%} [green]ok[/]"
        )
    out.print(f"  manifest {result.manifest_path}")


def _reusable_artifact(args: argparse.Namespace) -> Path | None:
    """The current fp32 artifact, when --view/--render/--precision can use it instead of exporting again.

    It must be complete (sha256 as recorded), at the asked opset, made the same way
    (simplified, default seed) and with the same weights file, if one is given.
    """
    if args.input_shape or args.no_simplify or args.seed != 0 or is_user_model_ref(args.model):
        return None
    current = artifacts.current_graph(args.name or args.model, args.output_dir)
    if current is None or current[1].get("opset") != args.opset:
        return None
    path, manifest = current
    weights = manifest.get("weights", {})
    if args.weights:
        if not args.weights.is_file() or weights.get("sha256") != artifacts.sha256_file(args.weights):
            return None
    elif weights.get("kind") != "random":
        return None
    return path


def _render(path: Path) -> None:
    from .render import render_graph

    with err.status(f"rendering {path.name} in headless Chromium"):
        r = render_graph(path)
    out.print(
        f"[bold green]rendered[/] {r.svg_path} and {r.png_path}: {r.nodes_drawn} operator nodes drawn "
        f"(graph has {r.nodes_in_graph}), {len(r.op_types_drawn)} op types, "
        f"{r.batch_edge_labels} edges labelled with the symbolic batch"
    )


def export_one(args: argparse.Namespace) -> int:
    from .pipeline import export_model
    from .viewer import view

    if args.render:
        from .render import render_available

        reason = render_available()
        if reason:
            raise UserError(f"--render: {reason}")
    if args.model.endswith(".onnx"):
        if args.weights or args.input_shape or args.all:
            raise UserError("an .onnx file is served or rendered as it is: --weights and --input-shape do not apply")
        if not (args.view or args.render):
            raise UserError(f"{args.model} is already ONNX: add --view to serve it or --render to draw it")
        path = Path(args.model)
        load_onnx(path)
    else:
        shape = parse_input_shape(args.input_shape) if args.input_shape else None
        wants_variant = args.precision != "fp32" or args.optimize_for is not None
        path = _reusable_artifact(args) if (args.view or args.render or wants_variant) else None
        if path is not None:
            out.print(f"reusing {path} (manifest and sha256 match; opset {args.opset})")
        else:
            with err.status(f"exporting {args.model}") as status:
                result = export_model(
                    args.model,
                    opset=args.opset,
                    output_dir=args.output_dir,
                    weights=args.weights,
                    simplify=not args.no_simplify,
                    input_shape=shape,
                    seed=args.seed,
                    name=args.name,
                    on_step=lambda msg: status.update(f"{args.model}: {msg}"),
                )
            _print_result(result)
            path = result.onnx_path
        if wants_variant:
            path = _variant(args, args.name or path.parent.name)
    if args.render:
        _render(path)
    if args.view:
        view(path, port=args.port, open_browser=not args.no_browser, announce=out.print)
    return 0


def _variant_options(args: argparse.Namespace) -> dict[str, object]:
    """build_variant's keyword arguments from the command line."""
    return {
        "precision": args.precision,
        "optimize_for": args.optimize_for,
        "output_dir": args.output_dir,
        "calibration_dir": args.calibration_dir,
        "calibration_method": args.calibration_method,
        "fp16_io": args.fp16_io,
        "reduce_range": {"auto": None, "on": True, "off": False}[args.reduce_range],
    }


def _variant(args: argparse.Namespace, name: str) -> Path:
    """Build the --precision / --optimize-for variant of an exported model and print its figures."""
    from .variants import build_variant

    with err.status(f"building the {args.precision} variant of {name}"):
        v = build_variant(name, **_variant_options(args))
    rec = v.record
    out.print(
        f"[bold green]variant[/] {v.key} -> {v.path} ({rec['size_bytes'] / 1e6:.1f} MB, {rec['nodes']} nodes, "
        f"{rec['identity_nodes_removed']} identity nodes removed, {v.seconds:.1f}s)"
    )
    if "quantization" in rec:
        q = rec["quantization"]
        out.print(
            f"  int8    QDQ, per-channel {q['per_channel']}, reduce_range {q['reduce_range']}, "
            f"{q['calibration_method']} on {q['calibration_images']} images ({rec['calibration_source']})"
        )
    if "optimization" in rec:
        o = rec["optimization"]
        out.print(f"  offline onnxruntime level '{o['level']}' for {o['target']} ({', '.join(o['providers'])})")
    parity = rec["parity"]
    for r in parity["results"]:
        out.print(
            f"  parity  batch {r['batch_size']} ({parity['inputs']} inputs): max abs {r['max_abs_err']:.2e}, "
            f"cosine {r['cosine_min']:.6f}, top-1 {r['top1_agreement']:.0%}"
        )
    if parity.get("accuracy"):
        a = parity["accuracy"]
        out.print(f"  accuracy {a['dataset']}: PyTorch fp32 {a['pytorch_fp32']:.2%}, {v.key} {a['onnx']:.2%}")
    return v.path


def export_all(args: argparse.Namespace) -> int:
    from .pipeline import export_model

    names = list_models()
    rows: list[tuple[str, str, str, str, str, str]] = []
    failed = 0
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    )
    with progress:
        task = progress.add_task("exporting", total=len(names))
        for name in names:
            progress.update(task, description=f"exporting {name}")
            try:
                r = export_model(
                    name, opset=args.opset, output_dir=args.output_dir, simplify=not args.no_simplify, seed=args.seed
                )
                if args.precision != "fp32" or args.optimize_for:
                    from .variants import build_variant

                    progress.update(task, description=f"{name}: {args.precision} variant")
                    build_variant(name, **_variant_options(args))
                if args.render:
                    from .render import render_graph

                    progress.update(task, description=f"rendering {name}")
                    render_graph(r.onnx_path)
                m = r.manifest
                worst = max(p["max_abs_err"] for p in m["parity"]["results"])
                rows.append(
                    (
                        name,
                        "[green]ok[/]",
                        f"{m['nodes']['raw']} -> {m['nodes']['simplified']}",
                        f"{m['size_bytes'] / 1e6:.1f}",
                        f"{worst:.1e}",
                        f"{r.seconds:.1f}",
                    )
                )
            except UserError as exc:
                failed += 1
                rows.append((name, "[red]FAILED[/]", "", "", str(exc), ""))
            progress.advance(task)
    table = Table(title=f"Exported {len(names) - failed}/{len(names)} models to {args.output_dir} (opset {args.opset})")
    for col in ("model", "status", "nodes raw -> simplified", "MB", "max abs err", "seconds"):
        table.add_column(col, no_wrap=col in ("model", "status"))
    for row in rows:
        table.add_row(*row)
    out.print(table)
    for name, status, *_rest, message, _secs in rows:
        if "FAILED" in status:
            out.print(f"[red]FAILED[/] {name}: {message}", soft_wrap=True)
    return 1 if failed else 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.json and not args.list:
        raise UserError("--json goes with --list")
    if args.list:
        return list_zoo(args.json)
    if (args.port is not None or args.no_browser) and not args.view:
        raise UserError("--port and --no-browser go with --view")
    validate_opset(args.opset)
    if args.all:
        if args.model:
            raise UserError("give either a model name or --all, not both")
        if args.weights or args.input_shape or args.name or args.view:
            raise UserError("--weights, --input-shape, --name and --view apply to one model, not --all")
        if args.render:
            from .render import render_available

            reason = render_available()
            if reason:
                raise UserError(f"--render: {reason}")
        return export_all(args)
    if not args.model:
        raise UserError("name a model (see --list), a file.py:Builder, or use --all")
    return export_one(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: _dispatch(args), interrupted="nothing partial was written")


if __name__ == "__main__":
    sys.exit(main())
