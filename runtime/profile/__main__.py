"""``python -m runtime.profile``: parse arguments, run :func:`runtime.profile.profile_artifact`, print.

The parser and ``--help`` import nothing heavy (no torch, onnxruntime, onnx or OpenVINO): those come
with the library, imported once the arguments are known.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from exporter import options
from exporter.console import CommandParser, Console, stdout_kept_for_output
from exporter.errors import UserError, run_guarded

DEFAULT_OUTPUT = Path("artifacts") / "profile"
ENGINES = ("onnxruntime", "openvino")


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="python -m runtime.profile",
        description="Where the time goes: each layer of an artifact's graph, under the PyTorch model's module "
        "names, with the kernel and precision it ran in, its share of the time, its fraction of that precision's "
        "measured peak and, for a variant, its SQNR against fp32.",
        epilog="examples:\n"
        "  python -m runtime.profile resnet18\n"
        "  python -m runtime.profile resnet18 --precision int8 --top 10\n"
        "  python -m runtime.profile resnet18 --precision int8 --engine openvino\n"
        "  python -m runtime.profile googlenet --batch-size 8 --json\n"
        "  python -m runtime.profile artifacts/mynet --precision int8 --reference my_net.py:MyNet\n"
        "  python -m runtime.profile resnet18 --device cuda --fail-on-fallback",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("artifact", metavar="ARTIFACT", help="zoo or artifact name, artifact folder, or NAME[.variant].onnx")
    w = p.add_argument_group("what to profile")
    options.precision(
        w,
        help="fp32, fp16, int8 (optionally .opt-cpu/.opt-cuda) or bf16 (OpenVINO's hint on the fp32 graph); "
        "default: the graph ARTIFACT names, else fp32",
    )
    w.add_argument("--engine", choices=ENGINES, default="onnxruntime", help="default onnxruntime")
    options.device(w)
    options.batch_size(w, many=False, default=1, help="batch size (default 1)")
    w.add_argument("--input-size", metavar="HxW", help="input size for an artifact exported with --dynamic-size")
    options.threads(w)
    w.add_argument("--runs", type=int, help="profiled runs (default: about 4 s worth, 10 to 100)")
    w.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    w.add_argument(
        "--reference",
        metavar="FILE.py:Builder",
        help="your own model's code: per-layer SQNR of its variants needs it (code named in a manifest is never run)",
    )
    w.add_argument("--no-sqnr", action="store_true", help="skip the per-layer SQNR of a variant")
    w.add_argument("--no-peaks", action="store_true", help="skip the machine's peak probes (no fraction of peak)")
    w.add_argument("--no-tf32", action="store_true", help="CUDA: fp32 without TF32")
    w.add_argument(
        "--fail-on-fallback",
        action="store_true",
        help="exit 1 when any compute node runs off the device's provider (onnxruntime's silent CPU fallback)",
    )
    o = p.add_argument_group("output")
    o.add_argument("--top", type=int, help="rows in the table (default 25; 0: every layer; the JSON holds all)")
    options.wide(o)
    options.json_flag(o, help="print the profile as JSON instead of the table")
    options.output_under_artifacts(
        o, folder=DEFAULT_OUTPUT.name, what="folder of profile.json and layers.png, under NAME/GRAPH.ENGINE.DEVICE.bN/"
    )
    options.artifacts_dir(o)
    options.no_rebuild(o)
    return p


def _top(value: int | None) -> int | None:
    from .report import DEFAULT_TOP

    if value is None:
        return DEFAULT_TOP
    if value < 0:
        raise UserError("--top must be >= 0 (0 shows every layer)")
    return value or None


def _run(args: argparse.Namespace) -> int:
    if not args.json:
        return _profile(args, Console(sys.stdout))
    # The JSON is the only thing on stdout: what the user's code or a library prints goes to stderr.
    with stdout_kept_for_output() as stdout:
        return _profile(args, Console(stdout))


def _profile(args: argparse.Namespace, out: Console) -> int:
    from exporter.files import made_folder
    from exporter.user_model import parse_input_sizes

    from .report import summary, table, title
    from .runner import ProfileConfig, profile_artifact
    from .store import write_profile

    err = Console(sys.stderr)
    top = _top(args.top)
    size = parse_input_sizes([args.input_size])[0] if args.input_size else None
    config = ProfileConfig(
        artifact=args.artifact,
        precision=args.precision,
        engine=args.engine,
        device=args.device,
        batch_size=args.batch_size,
        input_size=size,
        threads=args.threads,
        runs=args.runs,
        warmup=args.warmup,
        reference=args.reference,
        artifacts_dir=args.artifacts_dir,
        rebuild=not args.no_rebuild,
        peaks=not args.no_peaks,
        sqnr=not args.no_sqnr,
        tf32=not args.no_tf32,
    )
    config.validate()
    output = options.output_dir(args.output, args.artifacts_dir, DEFAULT_OUTPUT.name)
    # Proven writable before the long run, not after it; a run that fails removes the folders it made.
    with made_folder(output):
        profile = profile_artifact(config, say=err.print)
        files = write_profile(output, profile, top, args.artifacts_dir)
    if args.json:
        out.stream.write(profile.json_text() + "\n")
        out.stream.flush()
    else:
        cols, cells = table(profile, top, args.wide)
        out.table(cols, cells, title=title(profile), wide=args.wide)
        for line in summary(profile, top):
            out.print(line)
        out.print("wrote " + ", ".join(str(f) for f in files))
    if args.fail_on_fallback and profile.placement is not None and not profile.placement.ok:
        err.print(profile.placement.lines()[0], style="red")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: _run(args), interrupted="stopped; nothing was written")


if __name__ == "__main__":
    sys.exit(main())
