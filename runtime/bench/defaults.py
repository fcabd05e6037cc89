"""What a benchmark does unless told otherwise, and the engines it knows: plain data.

Kept in a module that imports nothing heavy, so that ``python -m runtime.bench --help`` (and a
mistyped flag) answers before torch, onnxruntime or numpy load; :mod:`runtime.bench.config`,
:mod:`~runtime.bench.engines`, :mod:`~runtime.bench.stats` and :mod:`~runtime.bench.baseline`
take their defaults from here.
"""

from __future__ import annotations

from exporter.options import ARTIFACTS_DIR

DEFAULT_MODELS = ("lenet5", "resnet18", "googlenet", "alexnet")
DEFAULT_BATCH_SIZES = (1, 8, 32)
DEFAULT_OUTPUT = ARTIFACTS_DIR / "bench"

ENGINES = ("onnxruntime", "pytorch", "torch-compile", "openvino", "tensorrt")
#: ``python -m runtime.bench`` without ``--engines``: torch-compile is left out because it
#: compiles once per batch size (about 30 s per model and batch on a 2-core CPU).
DEFAULT_ENGINES = ("onnxruntime", "pytorch", "openvino", "tensorrt")

#: ``--cuda-graph`` / ``--no-cuda-graph`` / neither (auto: measured per batch, runtime.bench.cuda)
CUDA_GRAPH_MODES = ("auto", "on", "off")
#: ``--torch-compile-mode``: auto is max-autotune on CUDA, default on CPU
TORCH_COMPILE_MODES = ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

#: An interval wider than this fraction of its figure marks the figure unstable.
DEFAULT_MAX_CI_WIDTH = 0.2
#: The slowdown the regression gate (``--baseline``) tolerates, as a fraction.
DEFAULT_MAX_SLOWDOWN = 0.05
