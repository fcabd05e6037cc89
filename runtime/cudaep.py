"""What this onnxruntime build's CUDA provider can do, read from the build itself (no GPU needed).

``prefer_nhwc`` is a CUDA provider option in recent onnxruntime releases, but it only changes
anything in a build compiled with the provider's NHWC kernels (``onnxruntime_USE_CUDA_NHWC_OPS``,
which registers them through ``RegisterCudaNhwcKernels``). The provider library is searched for
the option's name and that registration function once per process, so a run can say whether it
asked for NHWC and why not; on a GPU the session's read-back provider options and the optimized
graph's ``com.ms.internal.nhwc`` nodes show whether it took effect.
"""

from __future__ import annotations

import functools
import mmap
import sys
from dataclasses import dataclass
from pathlib import Path

#: The NHWC kernels' registration function, present only in builds with them.
NHWC_KERNELS_SYMBOL = b"RegisterCudaNhwcKernels"
NHWC_OPTION = b"prefer_nhwc"
#: The domain of the NHWC operators in an optimized graph.
NHWC_DOMAIN = "com.ms.internal.nhwc"


@dataclass(frozen=True)
class NhwcSupport:
    supported: bool
    reason: str
    onnxruntime: str
    library: str | None = None


def provider_library() -> Path | None:
    """The CUDA provider's shared library of the installed onnxruntime, or None where there is none."""
    import onnxruntime as ort

    name = "onnxruntime_providers_cuda.dll" if sys.platform == "win32" else "libonnxruntime_providers_cuda.so"
    path = Path(ort.__file__).parent / "capi" / name
    return path if path.is_file() else None


def scan_library(path: Path) -> tuple[bool, bool]:
    """Whether the library at ``path`` names the ``prefer_nhwc`` option and holds the NHWC kernels."""
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return data.find(NHWC_OPTION) >= 0, data.find(NHWC_KERNELS_SYMBOL) >= 0


def nhwc_support_of(version: str, library: Path | None) -> NhwcSupport:
    """The verdict for onnxruntime ``version`` with its CUDA provider library at ``library``."""
    if library is None:
        return NhwcSupport(False, f"onnxruntime {version} has no CUDA provider library", version)
    try:
        option, kernels = scan_library(library)
    except (OSError, ValueError) as exc:
        return NhwcSupport(False, f"cannot read {library.name}: {exc}", version, str(library))
    if not option:
        why = f"onnxruntime {version}'s CUDA provider has no prefer_nhwc option"
    elif not kernels:
        why = f"onnxruntime {version} was built without the CUDA provider's NHWC kernels"
    else:
        why = f"onnxruntime {version}: the CUDA provider has NHWC kernels ({NHWC_KERNELS_SYMBOL.decode()})"
    return NhwcSupport(option and kernels, why, version, str(library))


@functools.cache
def nhwc_support() -> NhwcSupport:
    """Whether the installed onnxruntime can honour ``prefer_nhwc`` (read once per process)."""
    import onnxruntime as ort

    return nhwc_support_of(ort.__version__, provider_library())
