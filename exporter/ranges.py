"""Activation ranges per input size, and the tensors one int8 grid cannot serve at every size.

A dynamic-size graph has one scale per quantized tensor for every input size, but a network's
activation ranges move with the size: measured on resnet_cifar (random weights, BatchNorm
calibrated at 32x32), the last residual block's tensors span [-3.7, 3.7] at 32x32 and
[-268, 142] at 256x300. Calibrated over all verified sizes, such a tensor keeps only a few of its
256 levels at the small size (all int8: 12.0 dB at 32x32, 6.6 dB at 1x1); calibrated at 32x32
alone, the large sizes clip (2.1 dB). :func:`range_spread` measures, per tensor, how much wider
the range over all sizes is than the narrowest size's own range; :func:`spread_float_nodes`
names the nodes to keep float so the tensors spreading most stay float end to end (their
producer and every consumer: a tensor between a float node and a quantized one is still rounded).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch

#: Numbers of most-spread tensors kept float by successive dynamic-size attempts. Measured on
#: resnet_cifar calibrated over its five verified sizes: the worst size's SQNR is 6.6 dB with
#: every tensor int8, 11.5 dB with 2 kept float, 18.4 dB with 6, 19.9 dB with 8.
SPREAD_STEPS = (2, 4, 6, 8, 12, 16)
CALIBRATION_BATCH = 16


class CalibrationReader:
    """onnxruntime CalibrationDataReader over groups of calibration images (one group per input size).

    ``__len__`` and ``set_range`` let onnxruntime feed it a few batches at a time
    (``CalibStridedMinMax``): its histogram calibrators otherwise keep every intermediate
    tensor of every calibration batch in memory (about 30 GB for VGG-16 on 256 images).
    A batch never mixes sizes: each group is cut into batches of its own.
    """

    def __init__(self, groups: Sequence[torch.Tensor], input_name: str, batch: int = CALIBRATION_BATCH) -> None:
        self._batches = [g[i : i + batch].numpy() for g in groups for i in range(0, len(g), batch)]
        self._input = input_name
        self._i, self._end = 0, len(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= self._end:
            return None
        self._i += 1
        return {self._input: self._batches[self._i - 1]}

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._i, self._end = start_index, min(end_index, len(self._batches))

    def rewind(self) -> None:
        self._i, self._end = 0, len(self._batches)


def _range(value: object) -> tuple[float, float]:
    lo, hi = getattr(value, "range_value", value)  # TensorData or a plain (min, max) pair
    return float(lo), float(hi)


def size_ranges(prepared: Path, groups: Sequence[torch.Tensor], work: Path) -> list[dict[str, tuple[float, float]]]:
    """Each float tensor's (min, max) over each group of calibration images (one group per input size)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
    out = []
    for i, group in enumerate(groups):
        calibrator = create_calibrator(
            prepared, augmented_model_path=str(work / f"ranges{i}.onnx"), calibrate_method=CalibrationMethod.MinMax
        )
        calibrator.collect_data(CalibrationReader([group], name))
        out.append({t: _range(v) for t, v in calibrator.compute_data().data.items()})
        del calibrator
    return out


def range_spread(ranges: Sequence[dict[str, tuple[float, float]]]) -> dict[str, float]:
    """Per tensor: the width of its range over all sizes divided by its narrowest size's own width
    (1: every size fills the int8 grid alike; 40: one size uses about 6 of the 256 levels)."""
    spread: dict[str, float] = {}
    for tensor in ranges[0] if ranges else {}:
        per = [r[tensor] for r in ranges if tensor in r]
        width = max(hi for _, hi in per) - min(lo for lo, _ in per)
        narrowest = min(hi - lo for lo, hi in per)
        spread[tensor] = width / narrowest if narrowest > 0 else (1.0 if width == 0 else float("inf"))
    return spread


def spread_float_nodes(model: onnx.ModelProto, spread: dict[str, float], tensors: int) -> tuple[list[str], float]:
    """The nodes producing or consuming the ``tensors`` most-spread tensors (graph order), and the
    smallest spread among those tensors."""
    producers = {o: n.name for n in model.graph.node for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.name)
    ranked = sorted((t for t in spread if t in producers or t in consumers), key=lambda t: -spread[t])[:tensors]
    chosen = {producers[t] for t in ranked if t in producers} | {c for t in ranked for c in consumers.get(t, [])}
    return [n.name for n in model.graph.node if n.name in chosen], min((spread[t] for t in ranked), default=1.0)
