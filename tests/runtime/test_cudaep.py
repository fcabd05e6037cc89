"""What the CUDA provider is asked for and what a session records: prefer_nhwc only where this build
has NHWC kernels (read from the provider library, no GPU needed), cuDNN's workspace, read-back."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from exporter.errors import UserError
from runtime import cudaep, sessions
from runtime.sessions import SessionConfig, cuda_provider_options, read_back


def _library(tmp_path: Path, *parts: bytes) -> Path:
    path = tmp_path / "libonnxruntime_providers_cuda.so"
    path.write_bytes(b"\x7fELF" + b"\0" * 64 + b"\0".join(parts) + b"\0" * 64)
    return path


def test_a_build_with_the_option_and_the_kernels_supports_nhwc(tmp_path: Path) -> None:
    got = cudaep.nhwc_support_of("1.31.1", _library(tmp_path, b"prefer_nhwc", b"RegisterCudaNhwcKernels"))
    assert got.supported and "1.31.1" in got.reason and "NHWC kernels" in got.reason


def test_a_build_without_the_kernels_says_so(tmp_path: Path) -> None:
    got = cudaep.nhwc_support_of("1.20.0", _library(tmp_path, b"prefer_nhwc"))
    assert not got.supported and got.reason == "onnxruntime 1.20.0 was built without the CUDA provider's NHWC kernels"


def test_a_build_without_the_option_says_so(tmp_path: Path) -> None:
    got = cudaep.nhwc_support_of("1.15.0", _library(tmp_path, b"cudnn_conv_algo_search"))
    assert not got.supported and "has no prefer_nhwc option" in got.reason


def test_a_build_without_the_cuda_provider_says_so() -> None:
    got = cudaep.nhwc_support_of("1.31.1", None)
    assert not got.supported and "no CUDA provider library" in got.reason


def test_the_installed_build_is_read_once() -> None:
    first = cudaep.nhwc_support()
    assert cudaep.nhwc_support() is first and first.onnxruntime and first.reason


@pytest.mark.parametrize("supported", [True, False])
def test_prefer_nhwc_is_asked_for_only_where_it_can_work(monkeypatch: pytest.MonkeyPatch, supported: bool) -> None:
    verdict = cudaep.NhwcSupport(supported, "the reason", "9.9")
    monkeypatch.setattr(cudaep, "nhwc_support", lambda: verdict)
    options = cuda_provider_options(SessionConfig(device="cuda", prefer_nhwc=True))
    assert ("prefer_nhwc" in options) is supported and options.get("prefer_nhwc", "1") == "1"
    assert sessions._cuda_notes(SessionConfig(device="cuda", prefer_nhwc=True)) == (
        [] if supported else ["prefer_nhwc not set: the reason"]
    )
    assert "prefer_nhwc" not in cuda_provider_options(SessionConfig(device="cuda"))


@pytest.mark.parametrize("on, value", [(True, "1"), (False, "0")])
def test_cudnn_workspace_is_always_said(on: bool, value: str) -> None:
    options = cuda_provider_options(SessionConfig(device="cuda", cudnn_max_workspace=on))
    assert options["cudnn_conv_use_max_workspace"] == value and options["cudnn_conv_algo_search"] == "EXHAUSTIVE"


def test_read_back_takes_what_onnxruntime_reports() -> None:
    fake = SimpleNamespace(get_provider_options=lambda: {"CUDAExecutionProvider": {"prefer_nhwc": 1, "x": "y"}})
    assert read_back(fake) == {"CUDAExecutionProvider": {"prefer_nhwc": "1", "x": "y"}}

    def broken():
        raise RuntimeError("no")

    assert read_back(SimpleNamespace(get_provider_options=broken)) == {}


def test_tensorrt_sessions_are_refused_on_the_cpu() -> None:
    with pytest.raises(UserError, match="TensorRT runs on CUDA"):
        SessionConfig(device="cpu", tensorrt="fp16")


def test_a_tensorrt_session_without_tensorrt_is_one_line(monkeypatch: pytest.MonkeyPatch, exported) -> None:
    monkeypatch.setattr(sessions, "tensorrt_missing", lambda: "TensorRT's libraries (libnvinfer) are not installed")
    with pytest.raises(UserError) as info:
        sessions.create_session(exported("lenet5").onnx_path, SessionConfig(device="cuda", tensorrt="int8"))
    assert str(info.value) == "tensorrt: not available (TensorRT's libraries (libnvinfer) are not installed)"


@pytest.mark.parametrize("raw, text", [(100300, "10.3.0"), (101301, "10.13.1"), (8601, "8.6.1")])
def test_tensorrt_version_from_libnvinfer(monkeypatch: pytest.MonkeyPatch, raw: int, text: str) -> None:
    monkeypatch.setattr(sessions, "_tensorrt_library", SimpleNamespace(getInferLibVersion=lambda: raw))
    assert sessions.tensorrt_version() == text


def test_no_tensorrt_version_without_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "_tensorrt_library", None)
    assert sessions.tensorrt_version() is None
