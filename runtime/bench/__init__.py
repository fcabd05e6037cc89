"""Latency benchmark of onnxruntime (the exported graph) against PyTorch eager, in one run.

Library API behind ``python -m runtime.bench``: :func:`run_benchmark` returns flat rows,
one per (model, engine, device, batch), plus the environment they were measured in.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from exporter import artifacts
from exporter.errors import ExportFailed, UserError
from exporter.pipeline import random_input
from exporter.zoo import get_spec

from .engines import prepare_onnxruntime, prepare_pytorch, time_engine
from .parity import _rebuild_reference, check, ensure_variant
from .sessions import SessionConfig, create_session
from .stats import summarize

ENGINES = ("onnxruntime", "pytorch")
DEFAULT_MODELS = ("lenet5", "resnet18", "googlenet", "alexnet")
DEFAULT_BATCH_SIZES = (1, 8, 32)


@dataclass
class BenchConfig:
    models: tuple[str, ...] = DEFAULT_MODELS
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    engines: tuple[str, ...] = ENGINES
    device: str = "auto"
    iterations: int | None = None
    min_seconds: float = 1.0
    warmup: int = 3
    threads: int | None = None
    io_binding: bool = True
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    cuda_graph: bool = False
    tf32: bool = True
    output_dir: Path = artifacts.DEFAULT_OUTPUT_DIR / "bench"
    artifacts_dir: Path = artifacts.DEFAULT_OUTPUT_DIR
    onnx: Path | None = None
    parity: bool = True
    precisions: tuple[str, ...] = ("fp32",)

    def validate(self) -> None:
        if not self.models:
            raise UserError("no models to benchmark")
        for name in self.models:
            get_spec(name)
        if self.onnx is not None and (len(self.models) != 1 or len(self.precisions) != 1):
            raise UserError("--onnx goes with exactly one model and one precision")
        for prec in self.precisions:
            base, _, opt = prec.partition(".opt-")
            if base not in ("fp32", "fp16", "int8") or opt not in ("", "cpu", "cuda"):
                raise UserError(f"unknown precision {prec!r}: use fp32, fp16, int8, optionally with .opt-cpu/.opt-cuda")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise UserError(f"batch sizes must be at least 1, got {list(self.batch_sizes)}")
        bad = [e for e in self.engines if e not in ENGINES]
        if bad or not self.engines:
            raise UserError(f"unknown engine {', '.join(bad) or '(none)'}: choose from {', '.join(ENGINES)}")
        if self.iterations is not None and self.iterations < 1:
            raise UserError("--iterations must be at least 1")
        if self.warmup < 0:
            raise UserError("--warmup cannot be negative")
        if self.threads is not None and self.threads < 1:
            raise UserError("--threads must be at least 1")

    def session_config(self, threads: int | None = None) -> SessionConfig:
        return SessionConfig(
            device=self.device,
            threads=threads or self.threads,
            io_binding=self.io_binding,
            cudnn_conv_algo_search=self.cudnn_conv_algo_search,
            cuda_graph=self.cuda_graph,
            tf32=self.tf32,
        )


@dataclass
class BenchResult:
    rows: list[dict[str, object]]
    environment: dict[str, object]
    config: dict[str, object]
    device: str
    device_reason: str
    parity: dict[str, dict[str, object]] = field(default_factory=dict)
    interrupted: bool = False


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str, providers: list[str], threads: int) -> dict[str, object]:
    import numpy
    import onnx
    import onnxruntime

    gpu = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else None
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "gpu_name": gpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "numpy": numpy.__version__,
        "providers": providers,
        "available_providers": onnxruntime.get_available_providers(),
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
    }


def plan_size(config: BenchConfig) -> int:
    per_batch = (len(config.precisions) if "onnxruntime" in config.engines else 0) + ("pytorch" in config.engines)
    return len(config.models) * len(config.batch_sizes) * per_batch


def run_benchmark(config: BenchConfig, on_progress: Callable[[str], None] | None = None) -> BenchResult:
    """Measure every (model, batch, engine); Ctrl-C stops and returns what was measured."""
    config.validate()
    progress = on_progress or (lambda _msg: None)
    threads = config.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    sess_config = config.session_config(threads)

    rows: list[dict[str, object]] = []
    parity_summary: dict[str, dict[str, object]] = {}
    device, reason, providers = "cpu", "", ["CPUExecutionProvider"]
    probe_graph: Path | None = None
    result = BenchResult(rows, {}, {}, device, reason, parity_summary)
    try:
        for name in config.models:
            progress(f"{name}: preparing")
            spec = get_spec(name)
            graphs: dict[str, Path] = {}
            blocked: dict[str, str] = {}
            for prec in config.precisions if "onnxruntime" in config.engines else ("fp32",):
                try:
                    if config.onnx is not None:
                        graphs[prec] = Path(config.onnx)
                        create_session(graphs[prec], SessionConfig(device="cpu"))  # readable, or a clear error
                    else:
                        graphs[prec] = ensure_variant(name, prec, config.artifacts_dir)
                except ExportFailed as exc:  # a variant that cannot be built is reported, not timed
                    blocked[prec] = f"variant-failed: {exc}"
            manifest = artifacts.read_manifest(name, config.artifacts_dir)
            if probe_graph is None and graphs:  # resolve the device once, so both engines use the same one
                probe_graph = next(iter(graphs.values()))
                _, info = create_session(probe_graph, sess_config)
                device, reason, providers = info.device, info.reason, info.providers
            model = _rebuild_reference(name, manifest, None)
            if config.parity and "onnxruntime" in config.engines:
                for prec, path in graphs.items():
                    progress(f"{name}: parity check ({prec})")
                    report = check(
                        name,
                        onnx_path=path,
                        batch_sizes=(1, max(config.batch_sizes)),
                        device=config.device,
                        precision=prec,
                        output_dir=config.artifacts_dir,
                        manifest=manifest,
                        reference=model,
                    )
                    device, reason, providers = report.device, report.session.reason, report.session.providers
                    parity_summary[f"{name}:{prec}"] = {
                        "passed": report.passed,
                        "max_abs_err": max(r.max_abs_err for r in report.results),
                        "failures": report.failures(),
                        "accuracy": report.accuracy,
                    }
                    if not report.passed:
                        blocked[prec] = "parity-failed"
            for batch in config.batch_sizes:
                x = random_input(spec.input_shape, batch, seed=batch).numpy()
                for engine in config.engines:
                    for prec in config.precisions if engine == "onnxruntime" else ("fp32",):
                        progress(f"{name} batch {batch}: {engine} {prec}")
                        row: dict[str, object] = {
                            "model": name,
                            "engine": engine,
                            "precision": prec,
                            "batch_size": batch,
                            "threads": threads,
                        }
                        if engine == "onnxruntime":
                            if prec in blocked:
                                row.update(device=device, status=blocked[prec])
                                rows.append(row)
                                progress("measured")
                                continue
                            prepared, info = prepare_onnxruntime(graphs[prec], x, sess_config)
                            device, reason, providers = info.device, info.reason, info.providers
                        else:
                            prepared = prepare_pytorch(
                                model, x, device, cudnn_benchmark=config.cudnn_conv_algo_search == "EXHAUSTIVE"
                            )
                        times = time_engine(prepared, config.warmup, config.iterations, config.min_seconds)
                        stats = summarize(times, batch)
                        row.update(
                            device=prepared.device,
                            status="ok",
                            **stats.to_dict(),
                            tf32=prepared.details.get("tf32"),
                            io_binding=prepared.details.get("io_binding"),
                            cudnn_conv_algo_search=prepared.details.get("cudnn_conv_algo_search"),
                            cuda_graph=prepared.details.get("cuda_graph"),
                        )
                        rows.append(row)
                        progress("measured")
            model.to("cpu")
    except KeyboardInterrupt:
        result.interrupted = True
    _add_speedups(rows)
    result.device, result.device_reason = device, reason
    result.environment = environment(device, providers, threads)
    result.config = {k: (str(v) if isinstance(v, Path) else v) for k, v in config.__dict__.items()}
    return result


def _add_speedups(rows: list[dict[str, object]]) -> None:
    """Ratios of medians measured in this run: each onnxruntime graph over PyTorch, and over onnxruntime fp32."""
    medians = {
        (r["model"], r["device"], r["batch_size"], r["engine"], r.get("precision", "fp32")): r.get("median_ms")
        for r in rows
        if r.get("status") == "ok"
    }
    for r in rows:
        if r.get("status") != "ok" or r["engine"] != "onnxruntime":
            continue
        key = (r["model"], r["device"], r["batch_size"])
        mine = r.get("median_ms")
        pt_ms = medians.get((*key, "pytorch", "fp32"))
        fp32_ms = medians.get((*key, "onnxruntime", "fp32"))
        r["speedup_vs_pytorch"] = (pt_ms / mine) if (mine and pt_ms) else None
        r["speedup_vs_fp32"] = (fp32_ms / mine) if (mine and fp32_ms and r.get("precision") != "fp32") else None
