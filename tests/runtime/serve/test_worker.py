"""The server process's inference callable, without a server."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.serve._worker import make_infer


class _Session:
    def __init__(self) -> None:
        self.feeds: list[dict[str, np.ndarray]] = []

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.feeds.append(feeds)
        return [np.arange(len(feeds["input"]), dtype=np.float32)[:, None]]


def test_input_below_the_minimum_size_never_reaches_onnxruntime() -> None:
    sess = _Session()
    infer = make_infer(sess, ["input"], ["output"], True, [5, 5])
    with pytest.raises(ValueError, match="input size 4x32 is below the smallest this graph accepts, 5x5"):
        infer([{"input": np.zeros((1, 3, 4, 32), np.float32)}])
    assert sess.feeds == []


def test_requests_of_one_shape_run_as_one_batch_and_split_back() -> None:
    sess = _Session()
    infer = make_infer(sess, ["input"], ["output"], True, [5, 5])
    out = infer([{"input": np.zeros((2, 3, 8, 8), np.float32)}, {"input": np.zeros((1, 3, 8, 8), np.float32)}])
    assert len(sess.feeds) == 1 and sess.feeds[0]["input"].shape == (3, 3, 8, 8)
    assert out[0]["output"].ravel().tolist() == [0.0, 1.0] and out[1]["output"].ravel().tolist() == [2.0]
