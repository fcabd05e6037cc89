"""Numerical parity of an exported graph with its PyTorch model, across batch sizes.

Library: :func:`check` returns a :class:`ParityReport`; ``python -m runtime.parity`` is a
thin command over it that prints a table (or JSON) and exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from exporter import artifacts
from exporter.errors import UserError, run_guarded
from exporter.pipeline import prepare_model, random_input

from .metrics import Comparison, Tolerance, compare, default_tolerance
from .sessions import SessionConfig, SessionInfo, create_session, run

DEFAULT_BATCH_SIZES = (1, 4, 9)


@dataclass
class ParityReport:
    model: str
    onnx_path: str
    device: str
    session: SessionInfo
    precision: str
    tolerance: Tolerance
    results: list[Comparison] = field(default_factory=list)
    inputs: str = "random"
    accuracy: dict[str, object] | None = None

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def failures(self) -> list[str]:
        return [f"batch {r.batch_size}: {f}" for r in self.results for f in r.failures]

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "onnx": self.onnx_path,
            "device": self.device,
            "providers": self.session.providers,
            "device_reason": self.session.reason,
            "precision": self.precision,
            "tolerance": self.tolerance.to_dict(),
            "passed": self.passed,
            "inputs": self.inputs,
            "accuracy": self.accuracy,
            "results": [r.to_dict() for r in self.results],
        }


def ensure_artifact(name: str, output_dir: str | Path = artifacts.DEFAULT_OUTPUT_DIR) -> tuple[Path, dict]:
    """Return the graph and manifest for a zoo model, exporting it first where missing or stale.

    A stale artifact is re-exported with the weights file its manifest names, where that file exists.
    """
    current = artifacts.current_graph(name, output_dir)
    if current is None:
        from exporter.pipeline import export_model

        w = (artifacts.read_manifest(name, output_dir) or {}).get("weights", {})
        weights = w.get("path") if w.get("kind") == "file" and Path(w.get("path", "")).is_file() else None
        result = export_model(name, output_dir=output_dir, weights=weights)
        return result.onnx_path, result.manifest
    return current


def ensure_variant(name: str, precision: str, output_dir: str | Path = artifacts.DEFAULT_OUTPUT_DIR) -> Path:
    """The graph of a precision variant (``fp16``, ``int8``, ``int8.opt-cpu``...), built first if missing."""
    from exporter.variants import build_variant

    path, manifest = ensure_artifact(name, output_dir)
    if precision == "fp32":
        return path
    record = (manifest.get("variants") or {}).get(precision)
    if record:
        file = artifacts.model_dir(name, output_dir) / record["file"]
        if (
            file.is_file()
            and record.get("base_sha256") == manifest["sha256"]
            and artifacts.sha256_file(file) == record["sha256"]
        ):
            return file
    base, _, opt = precision.partition(".opt-")
    return build_variant(name, precision=base, optimize_for=opt or None, output_dir=output_dir).path


def _rebuild_reference(name: str, manifest: dict | None, weights: str | Path | None) -> torch.nn.Module:
    """The PyTorch model the graph was exported from, with the same weights."""
    if weights is not None:
        src = (manifest or {}).get("source", {"kind": "zoo", "model": name})
        target = src.get("ref") or src.get("model") or name
        shape = tuple(manifest["input_shape"]) if manifest else None
        return prepare_model(target, weights=weights, input_shape=shape).model
    if manifest is None:
        return prepare_model(name).model
    src = manifest.get("source", {})
    if src.get("kind") == "module":
        raise UserError(f"{name} was exported from an in-memory module: pass the module to check(reference=...)")
    target = src.get("ref") or src.get("model") or name
    w = manifest.get("weights", {})
    if w.get("kind") == "file":
        return prepare_model(target, weights=w["path"], input_shape=tuple(manifest["input_shape"])).model
    return prepare_model(target, seed=int(w.get("seed", 0)), input_shape=tuple(manifest["input_shape"])).model


def has_digits_weights(manifest: dict | None) -> bool:
    """Whether the graph's weights come from ``python -m exporter.train`` (so digits accuracy means something)."""
    w = (manifest or {}).get("weights", {})
    return w.get("kind") == "file" and str(w.get("path", "")).endswith(".digits.pth")


def resolve_graph(
    name: str, onnx_path: str | Path | None, precision: str, output_dir: str | Path
) -> tuple[Path, dict | None]:
    """The graph to check: an explicit file, a recorded variant, or the fp32 artifact (exported if missing)."""
    if onnx_path is not None:
        path = Path(onnx_path)
        if not path.is_file():
            raise UserError(f"ONNX file not found: {path}")
        return path, artifacts.read_manifest(name, path.parent.parent) or artifacts.read_manifest(name, output_dir)
    if precision == "fp32":
        return ensure_artifact(name, output_dir)
    manifest = artifacts.read_manifest(name, output_dir)
    variant = ((manifest or {}).get("variants") or {}).get(precision)
    if not variant:
        raise UserError(f"no {precision} variant of {name}: run 'python -m exporter {name} --precision {precision}'")
    return artifacts.model_dir(name, output_dir) / variant["file"], manifest


def _run_graph(sess, x: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Run with the graph's input dtype (float16 I/O graphs get half inputs); return float32."""
    if sess.get_inputs()[0].type == "tensor(float16)":
        x = x.astype(np.float16)
    return np.asarray(run(sess, x)[0], dtype=np.float32)


def check(
    name: str,
    *,
    onnx_path: str | Path | None = None,
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
    device: str = "auto",
    precision: str = "fp32",
    atol: float | None = None,
    rtol: float | None = None,
    weights: str | Path | None = None,
    reference: torch.nn.Module | None = None,
    output_dir: str | Path = artifacts.DEFAULT_OUTPUT_DIR,
    seed: int = 1234,
    manifest: dict | None = None,
    real_data: bool | None = None,
) -> ParityReport:
    """Compare the ONNX graph of ``name`` with its PyTorch model, batch size by batch size.

    The graph comes from ``onnx_path``, the ``precision`` variant, or the fp32 artifact
    (exported if missing); the PyTorch side is rebuilt with the weights the manifest
    records (or ``weights``, or ``reference``). Inputs are fresh random tensors, one per
    batch size, proving the batch is dynamic. With ``real_data`` (default: when the
    weights were trained on the digits) inputs are held-out digits instead, and the
    accuracy of both sides on the whole held-out set is reported too.
    """
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise UserError(f"batch sizes must be at least 1, got {list(batch_sizes)}")
    path, found = resolve_graph(name, onnx_path, precision, output_dir)
    manifest = manifest or found
    sess, info = create_session(path, SessionConfig(device=device))
    tol = default_tolerance(info.device, precision)
    if atol is not None or rtol is not None:
        tol = Tolerance(
            atol=tol.atol if atol is None else atol,
            rtol=tol.rtol if rtol is None else rtol,
            min_cosine=tol.min_cosine,
            min_top1=tol.min_top1,
        )
    model = reference.eval() if reference is not None else _rebuild_reference(name, manifest, weights)
    shape = tuple(manifest["input_shape"]) if manifest else tuple(d for d in sess.get_inputs()[0].shape[1:])
    if not all(isinstance(d, int) for d in shape):
        raise UserError(f"cannot tell the input shape of {path}: export it with the exporter (manifest)")
    use_data = has_digits_weights(manifest) if real_data is None else real_data
    held_out = None
    if use_data:
        from exporter.data import digits

        held_out = digits(shape)[1]
    report = ParityReport(
        name,
        str(path),
        info.device,
        info,
        precision,
        tol,
        inputs="digits held-out" if held_out is not None else "random",
    )
    for i, batch in enumerate(batch_sizes):
        if held_out is not None and batch <= len(held_out.x):
            x = held_out.x[i * 7 % (len(held_out.x) - batch + 1) :][:batch]
        else:
            x = random_input(shape, int(batch), seed=seed + i)
        with torch.inference_mode():
            ref = model(x)
        ref0 = (ref[0] if isinstance(ref, (tuple, list)) else ref).numpy()
        report.results.append(compare(ref0, _run_graph(sess, x.numpy()), tol))
    if held_out is not None:
        from exporter.data import accuracy

        with torch.inference_mode():
            ref_logits = torch.cat([model(held_out.x[j : j + 128]) for j in range(0, len(held_out.x), 128)]).numpy()
        got_logits = np.concatenate(
            [_run_graph(sess, held_out.x[j : j + 128].numpy()) for j in range(0, len(held_out.x), 128)]
        )
        report.accuracy = {
            "dataset": "sklearn digits held-out",
            "n": int(len(held_out.x)),
            "pytorch_fp32": accuracy(ref_logits, held_out.y),
            "onnx": accuracy(got_logits, held_out.y),
            "top1_agreement": float((ref_logits.argmax(1) == got_logits.argmax(1)).mean()),
        }
    return report


def _print_report(report: ParityReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    console.print(
        f"{report.model} [{report.precision}, {report.inputs} inputs]: {report.onnx_path} on "
        f"{report.device} ({report.session.reason}); "
        f"tolerance atol={report.tolerance.atol:g} rtol={report.tolerance.rtol:g} "
        f"cosine>={report.tolerance.min_cosine:g}"
    )
    table = Table()
    for col in (
        "batch",
        "max abs err",
        "max rel err",
        "mean abs err",
        "cosine",
        "top-1",
        "top-5",
        "needed atol",
        "needed rtol",
        "result",
    ):
        table.add_column(col, justify="right")
    for r in report.results:
        table.add_row(
            str(r.batch_size),
            f"{r.max_abs_err:.2e}",
            f"{r.max_rel_err:.2e}",
            f"{r.mean_abs_err:.2e}",
            f"{r.cosine_min:.7f}",
            f"{r.top1_agreement:.1%}",
            f"{r.top5_agreement:.1%}",
            f"{r.needed_atol:.1e}",
            f"{r.needed_rtol:.1e}",
            "[green]pass[/]" if r.passed else "[red]FAIL[/]",
        )
    console.print(table)
    if report.accuracy:
        a = report.accuracy
        console.print(
            f"accuracy on {a['dataset']} (n={a['n']}): PyTorch fp32 {a['pytorch_fp32']:.2%}, "
            f"ONNX {report.precision} {a['onnx']:.2%}, top-1 agreement {a['top1_agreement']:.2%}"
        )
    for f in report.failures():
        console.print(f"[red]FAIL[/] {f}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m runtime.parity",
        description="Check an exported graph against PyTorch on random inputs at several batch sizes.",
    )
    p.add_argument("model", help="zoo name (or the artifact name of your own model)")
    p.add_argument("--onnx", type=Path, help="graph to check (default: artifacts/NAME/NAME.onnx, exported if missing)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=list(DEFAULT_BATCH_SIZES))
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--atol", type=float, help="override the default absolute tolerance")
    p.add_argument("--rtol", type=float, help="override the default relative tolerance")
    p.add_argument("--weights", type=Path, help="state_dict the graph was exported with")
    p.add_argument(
        "--precision",
        default="fp32",
        help="variant to check: fp32 (default), fp16, int8, or e.g. int8.opt-cpu; sets the default tolerances",
    )
    p.add_argument("--output-dir", type=Path, default=artifacts.DEFAULT_OUTPUT_DIR)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: _report(args), interrupted="no report")


def _report(args: argparse.Namespace) -> int:
    report = check(
        args.model,
        onnx_path=args.onnx,
        batch_sizes=tuple(args.batch_sizes),
        device=args.device,
        precision=args.precision,
        atol=args.atol,
        rtol=args.rtol,
        weights=args.weights,
        output_dir=args.output_dir,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
