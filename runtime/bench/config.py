"""What a benchmark run is asked to do, validated before anything runs."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from exporter import artifact as art
from exporter.errors import UserError

from ..session_config import CUDNN_SEARCH, DEVICES, SessionConfig
from .defaults import (
    CUDA_GRAPH_MODES,
    DEFAULT_BATCH_SIZES,
    DEFAULT_ENGINES,
    DEFAULT_MAX_CI_WIDTH,
    DEFAULT_MODELS,
    DEFAULT_OUTPUT,
    ENGINES,
    TORCH_COMPILE_MODES,
)
from .engines import EXTRA_PRECISIONS
from .timing import TimingPolicy


def parse_precision(text: str) -> str:
    """``fp32``, ``fp16``, ``int8`` (optionally ``.opt-cpu``/``.opt-cuda``) or ``bf16``, normalised."""
    text = text.strip()
    if text in EXTRA_PRECISIONS:
        return text
    try:
        return str(art.VariantKey.parse(text))
    except UserError:
        raise UserError(
            f"unknown precision {text!r}: use fp32, fp16, int8 (optionally .opt-cpu or .opt-cuda) or bf16"
        ) from None


def numeric_precision(text: str) -> str:
    """The number format of a benchmark precision: ``int8.opt-cpu`` -> ``int8``, ``bf16`` -> ``bf16``."""
    return text if text in EXTRA_PRECISIONS else art.VariantKey.parse(text).precision


def parse_references(texts: tuple[str, ...]) -> tuple[dict[str, str], str | None]:
    """``--reference`` values: ``NAME=FILE.py:Builder`` for the artifact NAME, or one plain
    ``FILE.py:Builder`` for the single user-model artifact of the run."""
    named: dict[str, str] = {}
    plain: list[str] = []
    for text in texts:
        name, sep, ref = text.partition("=")
        if sep and "/" not in name and "\\" not in name and not name.endswith(".py"):
            art.validate_name(name)
            target = ref
            named[name] = ref
        else:
            target = text
            plain.append(text)
        path, colon, attr = target.rpartition(":")
        if not colon or not path.endswith(".py") or not attr:
            raise UserError(f"bad --reference {text!r}: expected FILE.py:Builder or ARTIFACT=FILE.py:Builder")
    if len(plain) > 1:
        raise UserError("several --reference files without artifact names: write them as ARTIFACT=FILE.py:Builder")
    return named, (plain[0] if plain else None)


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run. ``models`` are zoo names, artifact names, artifact folders or ``.onnx``
    files beside their manifest; ``input_sizes`` (HxW) apply to artifacts exported with
    ``--dynamic-size``."""

    models: tuple[str, ...] = DEFAULT_MODELS
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    input_sizes: tuple[tuple[int, int], ...] = ()
    engines: tuple[str, ...] = DEFAULT_ENGINES
    precisions: tuple[str, ...] = ("fp32",)
    device: str = "auto"
    threads: int | None = None
    timing: TimingPolicy = field(default_factory=TimingPolicy)
    max_ci_width: float = DEFAULT_MAX_CI_WIDTH
    seed: int = 0
    io_binding: bool = True
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    #: CUDA graphs for onnxruntime: "auto" (measured per batch, kept where faster), "on" or "off"
    cuda_graph: str = "auto"
    tf32: bool = True
    #: CUDA: onnxruntime's NHWC kernels (prefer_nhwc) where this build has them
    prefer_nhwc: bool = False
    #: CUDA: fp16 graphs with float16 inputs and outputs (the boundary Cast pair removed)
    fp16_io: bool = False
    #: CUDA: cuDNN's algorithm search may use the largest workspace (cudnn_conv_use_max_workspace)
    cudnn_max_workspace: bool = True
    #: where every node of each onnxruntime graph runs, recorded per row (runtime.bench.placement)
    placement_audit: bool = False
    #: torch.compile's mode: auto is max-autotune on CUDA, default on CPU
    torch_compile_mode: str = "auto"
    parity: bool = True
    roofline: bool = True
    references: tuple[str, ...] = ()
    output_dir: Path = DEFAULT_OUTPUT
    artifacts_dir: Path = art.DEFAULT_ARTIFACTS_DIR
    rebuild: bool = True
    #: an earlier run's results.json (or its folder) to gate this run against (runtime.bench.baseline)
    baseline: Path | None = None
    max_slowdown: float = 0.05
    #: throughput mode (runtime.bench.throughput): engine streams and requests in flight per setting
    streams: tuple[int, ...] = ()
    concurrency: tuple[int, ...] = ()

    @property
    def throughput(self) -> bool:
        return bool(self.streams or self.concurrency)

    def validate(self) -> None:
        if not self.models:
            raise UserError("no models to benchmark")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise UserError(f"batch sizes must be at least 1, got {list(self.batch_sizes)}")
        bad = [e for e in self.engines if e not in ENGINES]
        if bad or not self.engines:
            raise UserError(f"unknown engine {', '.join(bad) or '(none)'}: choose from {', '.join(ENGINES)} or all")
        for p in self.precisions:
            parse_precision(p)
        if not self.precisions:
            raise UserError("no precisions to benchmark")
        if self.device not in DEVICES:
            raise UserError(f"unknown device {self.device!r}: choose one of {', '.join(DEVICES)}")
        if self.cudnn_conv_algo_search not in CUDNN_SEARCH:
            raise UserError(f"--cudnn-search must be one of {', '.join(CUDNN_SEARCH)}")
        if self.cuda_graph not in CUDA_GRAPH_MODES:
            raise UserError(f"cuda_graph must be one of {', '.join(CUDA_GRAPH_MODES)}, not {self.cuda_graph!r}")
        if self.torch_compile_mode not in TORCH_COMPILE_MODES:
            raise UserError(f"--torch-compile-mode must be one of {', '.join(TORCH_COMPILE_MODES)}")
        if self.threads is not None and self.threads < 1:
            raise UserError("--threads must be at least 1")
        if not (self.max_ci_width > 0 and math.isfinite(self.max_ci_width)):
            raise UserError("--max-ci-width must be a finite number > 0")
        if self.seed < 0:
            raise UserError("--seed must be >= 0")
        self.timing.validate()
        parse_references(self.references)
        if any(v < 1 for v in (*self.streams, *self.concurrency)):
            raise UserError("--streams and --concurrency must be at least 1")
        if not (self.max_slowdown >= 0 and math.isfinite(self.max_slowdown)):
            raise UserError(f"--max-slowdown must be a finite number >= 0, got {self.max_slowdown}")

    def session_config(self, device: str, threads: int) -> SessionConfig:
        """The onnxruntime settings of this run (also what its parity checks use). Spinning is off:
        engines alternate on the same cores, and a spinning idle pool steals the next one's CPU."""
        return SessionConfig(
            device=device,
            threads=threads,
            io_binding=self.io_binding,
            cudnn_conv_algo_search=self.cudnn_conv_algo_search,
            cuda_graph=False,  # captured per batch by the onnxruntime engine (runtime.bench.cuda)
            tf32=self.tf32,
            allow_spinning=False,
            prefer_nhwc=self.prefer_nhwc,
            cudnn_max_workspace=self.cudnn_max_workspace,
        )

    def record(self) -> dict[str, object]:
        """JSON-safe copy for the results file."""
        out: dict[str, object] = {}
        for key, value in asdict(self).items():
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out[key] = value
        return out
