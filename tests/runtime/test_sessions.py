"""Session creation: provider read-back, silent CUDA fallback, bad graphs and bad feeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import runtime.sessions as sessions
from exporter.errors import UserError
from runtime.sessions import CudaUnavailable, SessionConfig, check_feed, create_session, cuda_provider_built

HAS_CUDA_EP = False
try:
    import torch

    HAS_CUDA_EP = torch.cuda.is_available() and cuda_provider_built()
except ImportError:
    pass


@pytest.fixture(scope="module")
def lenet(exported) -> Path:
    return exported("lenet5").onnx_path


def test_cpu_session_reads_back_cpu_provider(lenet: Path) -> None:
    sess, info = create_session(lenet, SessionConfig(device="cpu", threads=1))
    assert info.device == "cpu" and info.providers == ["CPUExecutionProvider"] == sess.get_providers()


@pytest.mark.cpu_only
@pytest.mark.skipif(HAS_CUDA_EP, reason="machine has a working CUDA provider")
def test_auto_without_gpu_says_why_it_is_on_cpu(lenet: Path) -> None:
    _, info = create_session(lenet, SessionConfig(device="auto"))
    assert info.device == "cpu"
    assert info.reason.startswith("fell back to CPU:")


@pytest.mark.cpu_only
@pytest.mark.skipif(HAS_CUDA_EP, reason="machine has a working CUDA provider")
def test_device_cuda_without_cuda_is_a_clear_error(lenet: Path) -> None:
    with pytest.raises(CudaUnavailable, match="--device cuda"):
        create_session(lenet, SessionConfig(device="cuda"))


_RealSession = ort.InferenceSession


class _FallbackSession:
    """Stands in for onnxruntime when the CUDA provider cannot be created: CPU only, silently."""

    def __init__(self, model, sess_options=None, providers=None):
        self.requested = providers
        self._real = _RealSession(model, sess_options=sess_options, providers=["CPUExecutionProvider"])

    def get_providers(self):
        return self._real.get_providers()


def test_silent_fallback_is_detected_under_auto(lenet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "_no_gpu_reason", lambda: None)
    monkeypatch.setattr(sessions.ort, "InferenceSession", _FallbackSession)
    sess, info = create_session(lenet, SessionConfig(device="auto"))
    assert sess.requested[0][0] == "CUDAExecutionProvider", "CUDA was not even asked for"
    assert info.device == "cpu"
    assert "could not create the CUDA execution provider" in info.reason


def test_silent_fallback_under_device_cuda_fails_loudly(lenet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "_no_gpu_reason", lambda: None)
    monkeypatch.setattr(sessions.ort, "InferenceSession", _FallbackSession)
    with pytest.raises(CudaUnavailable, match="silently fell back to CPUExecutionProvider"):
        create_session(lenet, SessionConfig(device="cuda"))


@pytest.mark.cpu_only
@pytest.mark.skipif(not cuda_provider_built() or HAS_CUDA_EP, reason="needs onnxruntime-gpu on a machine without CUDA")
def test_real_cuda_provider_failure_is_read_back(lenet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime-gpu here really tries CUDA, fails, and runs on CPU: we must notice."""
    monkeypatch.setattr(sessions, "_no_gpu_reason", lambda: None)
    _, info = create_session(lenet, SessionConfig(device="auto"))
    assert info.device == "cpu" and "CUDAExecutionProvider" not in info.providers


def test_corrupt_and_missing_graphs_are_user_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf model")
    with pytest.raises(UserError, match="cannot load"):
        create_session(bad, SessionConfig(device="cpu"))
    with pytest.raises(UserError, match="not found"):
        create_session(tmp_path / "missing.onnx", SessionConfig(device="cpu"))


def test_bad_device_name_is_rejected() -> None:
    with pytest.raises(UserError, match="unknown device"):
        SessionConfig(device="tpu")


@pytest.mark.parametrize(
    "x, message",
    [
        (np.random.rand(2, 3, 32, 32), "dtype float64"),
        (np.random.rand(2, 3, 28, 28).astype(np.float32), "does not match"),
        (np.random.rand(3, 32, 32).astype(np.float32), "3 dims"),
        (np.random.rand(0, 3, 32, 32).astype(np.float32), "at least 1"),
    ],
)
def test_wrong_feed_is_rejected_before_running(lenet: Path, x: np.ndarray, message: str) -> None:
    sess, _ = create_session(lenet, SessionConfig(device="cpu"))
    with pytest.raises(UserError, match=message):
        check_feed(sess, x)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA_EP, reason="no CUDA GPU with onnxruntime-gpu")
def test_cuda_session_is_really_on_cuda(lenet: Path) -> None:
    _, info = create_session(lenet, SessionConfig(device="cuda"))
    assert info.device == "cuda" and info.providers[0] == "CUDAExecutionProvider"
