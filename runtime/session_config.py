"""How to build an onnxruntime session (:class:`SessionConfig`) and the choices it takes.

Kept apart from :mod:`runtime.sessions`, which creates the sessions, so that command-line parsers
can offer these choices without importing onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.errors import UserError
from exporter.options import DEVICES

CUDNN_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
GRAPH_OPTIMIZATION = ("disable", "basic", "extended", "all")

__all__ = ["CUDNN_SEARCH", "DEVICES", "GRAPH_OPTIMIZATION", "SessionConfig"]


@dataclass(frozen=True)
class SessionConfig:
    """How to build a session; recorded with every benchmark result."""

    device: str = "auto"
    threads: int | None = None
    io_binding: bool = True
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    cuda_graph: bool = False
    tf32: bool = True
    graph_optimization: str = "all"
    #: Idle intra-op threads spin by default; when two engines alternate on few cores that
    #: spinning steals the other's CPU (resnet18 fp32 went from 8.6 to 16.3 ms), so the
    #: benchmark turns it off.
    allow_spinning: bool = True
    #: onnxruntime's profiler on, writing its JSON trace to files starting with this path
    #: (``runtime.profile`` reads it); None: off
    profile_prefix: str | None = None
    #: CUDA: ask for the provider's NHWC kernels (``prefer_nhwc``); honoured only where this build has
    #: them (:func:`runtime.cudaep.nhwc_support`), said in the session's notes where not
    prefer_nhwc: bool = False
    #: CUDA: let cuDNN's algorithm search use as much workspace as it wants
    #: (``cudnn_conv_use_max_workspace``; onnxruntime's own default is on)
    cudnn_max_workspace: bool = True
    #: run on onnxruntime's TensorRT provider, building an engine of this precision (fp32, fp16, int8;
    #: :mod:`runtime.tensorrt`), with these extra provider options (cache, profile); None: not TensorRT
    tensorrt: str | None = None
    tensorrt_options: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise UserError(f"unknown device {self.device!r}: choose one of {', '.join(DEVICES)}")
        if self.cudnn_conv_algo_search not in CUDNN_SEARCH:
            raise UserError(f"cudnn_conv_algo_search must be one of {', '.join(CUDNN_SEARCH)}")
        if self.threads is not None and self.threads < 1:
            raise UserError("threads must be at least 1")
        if self.graph_optimization not in GRAPH_OPTIMIZATION:
            raise UserError(f"graph optimization must be one of {', '.join(GRAPH_OPTIMIZATION)}")
        if self.tensorrt is not None and self.device == "cpu":
            raise UserError("TensorRT runs on CUDA: it cannot go with --device cpu")
