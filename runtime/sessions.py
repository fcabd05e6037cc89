"""The one place that creates onnxruntime sessions, CUDA first, and says which device it really got.

onnxruntime quietly falls back to the CPU when the CUDA execution provider cannot be
created, so every session's providers are read back after creation: ``device="cuda"``
then fails loudly, and ``device="auto"`` reports where it ended up and why.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from exporter.errors import UserError, first_line

# SessionConfig and its choices live apart so that parsers can use them without onnxruntime.
from .session_config import CUDNN_SEARCH, DEVICES, GRAPH_OPTIMIZATION, SessionConfig  # noqa: F401

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


class CudaUnavailable(UserError):
    """``--device cuda`` was asked for and no working CUDA execution provider exists."""


@dataclass
class SessionInfo:
    """What a created session really is."""

    device: str
    providers: list[str]
    reason: str
    provider_options: dict[str, dict[str, str]] = field(default_factory=dict)
    intra_op_threads: int | None = None
    #: the provider options onnxruntime reports for the created session (what it really uses)
    read_back: dict[str, dict[str, str]] = field(default_factory=dict)
    #: settings asked for that this build cannot honour, in words
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


_dlls_preloaded = False


def preload_cuda_libraries() -> None:
    """Load the CUDA/cuDNN libraries that a CUDA build of torch brings (nvidia-* wheels).

    With them in the process, onnxruntime's CUDA provider works without a system CUDA.
    Importing torch first does the same when its CUDA major version matches.
    """
    global _dlls_preloaded
    if _dlls_preloaded:
        return
    _dlls_preloaded = True
    try:
        import torch  # noqa: F401  (loads torch's bundled CUDA libraries where it has them)
    except ImportError:
        pass
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:  # best effort and chatty on failure; session creation says what is missing
            with contextlib.redirect_stdout(io.StringIO()):
                preload(cuda=True, cudnn=True, msvc=False)
        except Exception:
            pass


def cuda_provider_built() -> bool:
    """Whether this onnxruntime build includes the CUDA execution provider at all."""
    return CUDA_PROVIDER in ort.get_available_providers()


def _no_gpu_reason() -> str | None:
    """A reason not to try CUDA at all, or None when a GPU may be present."""
    if not cuda_provider_built():
        return "this onnxruntime build has no CUDA execution provider (install onnxruntime-gpu)"
    if not (Path("/dev/nvidiactl").exists() or os.environ.get("CUDA_VISIBLE_DEVICES")):
        try:
            import torch

            if not torch.cuda.is_available():
                return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
        except ImportError:
            return "no NVIDIA device found"
    return None


def _session_options(config: SessionConfig, optimized_path: Path | None = None) -> ort.SessionOptions:
    so = ort.SessionOptions()
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    so.graph_optimization_level = levels[config.graph_optimization]
    if config.threads:
        so.intra_op_num_threads = config.threads
        so.inter_op_num_threads = 1
    if not config.allow_spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if config.profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = config.profile_prefix
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    so.log_severity_level = 3
    return so


def cuda_provider_options(config: SessionConfig) -> dict[str, str]:
    """The CUDA provider's options for ``config``; ``prefer_nhwc`` only where this build has NHWC kernels."""
    from .cudaep import nhwc_support

    options = {
        "cudnn_conv_algo_search": config.cudnn_conv_algo_search,
        "cudnn_conv_use_max_workspace": "1" if config.cudnn_max_workspace else "0",
        "enable_cuda_graph": "1" if config.cuda_graph else "0",
        "use_tf32": "1" if config.tf32 else "0",
        "do_copy_in_default_stream": "1",
    }
    if config.prefer_nhwc and nhwc_support().supported:
        options["prefer_nhwc"] = "1"
    return options


def _cuda_notes(config: SessionConfig) -> list[str]:
    from .cudaep import nhwc_support

    support = nhwc_support()
    return [f"prefer_nhwc not set: {support.reason}"] if config.prefer_nhwc and not support.supported else []


def read_back(sess: ort.InferenceSession) -> dict[str, dict[str, str]]:
    """The provider options onnxruntime reports for a session (empty where it cannot say)."""
    try:
        got = sess.get_provider_options()
    except Exception:
        return {}
    return {str(p): {str(k): str(v) for k, v in (o or {}).items()} for p, o in dict(got).items()}


def _create(
    model: str | Path | bytes, config: SessionConfig, providers: list, optimized_path: Path | None = None
) -> ort.InferenceSession:
    source = str(model) if isinstance(model, Path) else model
    previous = 2
    ort.set_default_logger_severity(4)  # onnxruntime's own fallback warning is replaced by ours
    try:
        return ort.InferenceSession(source, sess_options=_session_options(config, optimized_path), providers=providers)
    except MemoryError:
        raise
    except Exception as exc:
        where = model if not isinstance(model, bytes) else "the graph"
        raise UserError(f"onnxruntime cannot load {where}: {first_line(exc)}") from exc
    finally:
        ort.set_default_logger_severity(previous)


def cuda_usable() -> bool:
    """Whether a CUDA session can really be created here (the provider is built and a GPU answers)."""
    return _no_gpu_reason() is None


def cuda_missing_reason() -> str | None:
    """Why :func:`cuda_usable` is False, in words (no CUDA provider in this build, no GPU visible), or None."""
    return _no_gpu_reason()


def cuda_missing() -> str | None:
    """Why onnxruntime's CUDA provider cannot run here, or None where a session on it was really created
    (its providers read back: onnxruntime falls back to the CPU silently). Creates a one-node session."""
    from onnx import TensorProto, helper

    why = cuda_missing_reason()
    if why:
        return why
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("x", "y"))
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    try:
        create_session(model.SerializeToString(), SessionConfig(device="cuda"))
    except UserError as exc:  # CudaUnavailable: it fell back to the CPU; or the provider refused to load at all
        return str(exc).removeprefix("--device cuda: ")
    return None


def save_optimized(model: Path, out_path: Path, config: SessionConfig) -> list[str]:
    """Have onnxruntime write its optimized graph (at ``config.graph_optimization``) to ``out_path``;
    return the providers it was optimized for."""
    providers: list = [CPU_PROVIDER]
    if config.device == "cuda":
        preload_cuda_libraries()
        providers = [(CUDA_PROVIDER, cuda_provider_options(config)), CPU_PROVIDER]
    sess = _create(model, config, providers, optimized_path=out_path)
    actual = sess.get_providers()
    if config.device == "cuda" and CUDA_PROVIDER not in actual:
        raise CudaUnavailable("onnxruntime could not create the CUDA execution provider to optimize for it")
    return actual


def create_session(
    model: str | Path | bytes, config: SessionConfig | None = None
) -> tuple[ort.InferenceSession, SessionInfo]:
    """Create a session on the configured device and read back what it really runs on."""
    config = config or SessionConfig()
    if isinstance(model, (str, Path)) and not Path(model).is_file():
        raise UserError(f"ONNX file not found: {model}")
    if config.tensorrt is not None:
        from .tensorrt import options

        trt = {**options(config.tensorrt), **dict(config.tensorrt_options)}
        return create_tensorrt_session(model, config, trt)
    if config.device == "cpu":
        sess = _create(model, config, [CPU_PROVIDER])
        return sess, SessionInfo("cpu", sess.get_providers(), "CPU requested", {}, config.threads)

    skip = _no_gpu_reason()
    if skip and config.device == "auto":
        sess = _create(model, config, [CPU_PROVIDER])
        return sess, SessionInfo("cpu", sess.get_providers(), f"fell back to CPU: {skip}", {}, config.threads)
    if skip and not cuda_provider_built():
        raise CudaUnavailable(f"--device cuda: {skip}")

    preload_cuda_libraries()
    options = cuda_provider_options(config)
    sess = _create(model, config, [(CUDA_PROVIDER, options), CPU_PROVIDER])
    actual = sess.get_providers()
    if CUDA_PROVIDER in actual:
        return sess, SessionInfo(
            "cuda",
            actual,
            "CUDA execution provider active",
            {CUDA_PROVIDER: options},
            config.threads,
            read_back=read_back(sess),
            notes=_cuda_notes(config),
        )
    why = skip or "onnxruntime could not create the CUDA execution provider (CUDA/cuDNN libraries missing or no GPU)"
    if config.device == "cuda":
        raise CudaUnavailable(f"--device cuda: {why}; the session silently fell back to {', '.join(actual)}")
    return sess, SessionInfo("cpu", actual, f"fell back to CPU: {why}", {}, config.threads)


TENSORRT_PROVIDER = "TensorrtExecutionProvider"
_TENSORRT_LIBRARIES = ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so", "nvinfer_10.dll", "nvinfer.dll")


#: the libnvinfer :func:`tensorrt_missing` loaded
_tensorrt_library: object | None = None


def tensorrt_missing() -> str | None:
    """Why a TensorRT session cannot be created here, or None when TensorRT's libraries load.

    onnxruntime-gpu lists ``TensorrtExecutionProvider`` as available even where TensorRT's
    libraries (libnvinfer) are absent, and a session asked for it then silently runs on the
    CUDA or CPU provider; so the libraries are loaded here first (from the system or the
    ``tensorrt`` pip wheels), and :func:`create_tensorrt_session` reads the providers back.
    """
    import ctypes

    global _tensorrt_library
    if TENSORRT_PROVIDER not in ort.get_available_providers():
        return "this onnxruntime build has no TensorRT execution provider (install onnxruntime-gpu)"
    gpu = _no_gpu_reason()
    if gpu:
        return gpu
    preload_cuda_libraries()
    candidates: list[str] = list(_TENSORRT_LIBRARIES)
    try:  # the pip wheels (tensorrt / tensorrt-cu12-libs) keep the libraries in a package folder
        import tensorrt_libs  # type: ignore[import-not-found]

        folder = Path(tensorrt_libs.__file__).parent
        candidates = [str(p) for p in sorted(folder.glob("libnvinfer.so*"))] + candidates
    except ImportError:
        pass
    for name in candidates:
        try:
            _tensorrt_library = ctypes.CDLL(name, mode=getattr(ctypes, "RTLD_GLOBAL", 0))
            return None
        except OSError:
            continue
    return "TensorRT's libraries (libnvinfer) are not installed (pip install tensorrt, or NVIDIA's packages)"


def tensorrt_version() -> str | None:
    """The version of the libnvinfer :func:`tensorrt_missing` loaded (``getInferLibVersion``), or None."""
    lib = _tensorrt_library
    get = getattr(lib, "getInferLibVersion", None) if lib is not None else None
    if get is None:
        return None
    try:
        v = int(get())
    except Exception:
        return None
    # NV_TENSORRT_VERSION: major * 1000 + minor * 100 + patch before TensorRT 10, major * 10000 + ... since
    return f"{v // 10000}.{v // 100 % 100}.{v % 100}" if v >= 10000 else f"{v // 1000}.{v // 100 % 10}.{v % 100}"


def create_tensorrt_session(
    model: str | Path | bytes, config: SessionConfig, trt_options: dict[str, str]
) -> tuple[ort.InferenceSession, SessionInfo]:
    """A session on onnxruntime's TensorRT execution provider (CUDA, then CPU, behind it for
    unsupported nodes); refuses unless TensorRT is really active after creation."""
    missing = tensorrt_missing()
    if missing:
        raise UserError(f"tensorrt: not available ({missing})")
    cuda_options = cuda_provider_options(config)
    sess = _create(model, config, [(TENSORRT_PROVIDER, trt_options), (CUDA_PROVIDER, cuda_options), CPU_PROVIDER])
    actual = sess.get_providers()
    if TENSORRT_PROVIDER not in actual:
        raise UserError(f"tensorrt: not available (onnxruntime silently fell back to {', '.join(actual)})")
    return sess, SessionInfo(
        "cuda",
        actual,
        "TensorRT execution provider active",
        {TENSORRT_PROVIDER: dict(trt_options), CUDA_PROVIDER: cuda_options},
        config.threads,
        read_back=read_back(sess),
        notes=_cuda_notes(config),
    )


def check_feed(sess: ort.InferenceSession, x: np.ndarray) -> None:
    """Reject an input whose dtype or fixed dimensions do not fit the graph's first input."""
    meta = sess.get_inputs()[0]
    expected_dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16}.get(meta.type)
    if expected_dtype is not None and x.dtype != expected_dtype:
        raise UserError(f"input dtype {x.dtype} does not match the graph's {np.dtype(expected_dtype).name}")
    if x.ndim != len(meta.shape):
        raise UserError(f"input has {x.ndim} dims {tuple(x.shape)}, the graph expects {len(meta.shape)} {meta.shape}")
    for i, (got, want) in enumerate(zip(x.shape, meta.shape)):
        if isinstance(want, int) and got != want:
            raise UserError(f"input shape {tuple(x.shape)} does not match the graph's {meta.shape} (dim {i})")
    if x.shape[0] < 1:
        raise UserError("batch size must be at least 1")


def run(sess: ort.InferenceSession, x: np.ndarray) -> list[np.ndarray]:
    """Run the session on one input (validated first) and return all outputs."""
    check_feed(sess, x)
    return sess.run(None, {sess.get_inputs()[0].name: x})
