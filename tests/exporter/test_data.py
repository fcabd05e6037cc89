"""Users' image sets: an ImageFolder or .npz files as a labelled evaluation set, .npz as calibration images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from exporter.data import load_calibration_dir, load_labelled
from exporter.errors import UserError


def _png(path: Path, value: int, size: tuple[int, int] = (10, 12)) -> None:
    from PIL import Image

    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path)


def test_image_folder_is_labelled_by_sorted_class_folders(tmp_path: Path) -> None:
    for cls, value in (("cat", 0), ("dog", 255)):
        (tmp_path / cls).mkdir()
        for i in range(3):
            _png(tmp_path / cls / f"{i}.png", value)
    split = load_labelled(tmp_path, (3, 32, 32))
    assert split.x.shape == (6, 3, 32, 32) and split.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.allclose(split.x[0], torch.full((3, 32, 32), -1.0)) and torch.allclose(
        split.x[-1], torch.ones(3, 32, 32)
    )


def test_npz_with_x_and_y(tmp_path: Path) -> None:
    x = np.random.default_rng(0).uniform(-1, 1, (5, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", x=x, y=np.arange(5))
    split = load_labelled(tmp_path / "eval.npz", (3, 16, 16))
    assert split.x.shape == (5, 3, 16, 16) and split.y.tolist() == [0, 1, 2, 3, 4]
    assert load_calibration_dir(tmp_path, (3, 16, 16)).shape == (5, 3, 16, 16)
    np.savez(tmp_path / "bad.npz", x=x, y=np.arange(4))
    with pytest.raises(UserError, match="5 images but 4 labels"):
        load_labelled(tmp_path, (3, 16, 16))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither .npz files nor one subfolder per class"):
        load_labelled(tmp_path / "empty", (3, 16, 16))
    with pytest.raises(UserError, match="evaluation set not found"):
        load_labelled(tmp_path / "missing", (3, 16, 16))


@pytest.mark.parametrize("layout", ["image_folder", "npz"])
def test_a_special_file_in_an_evaluation_set_is_refused_unread(tmp_path: Path, layout: str) -> None:
    """Defect (new-user trial): a FIFO in --eval-dir hung the search forever (--calibration-dir refused it);
    an unreadable image there was called a "calibration file"."""
    import os

    if layout == "npz":
        os.mkfifo(tmp_path / "a.npz")
    else:
        (tmp_path / "0").mkdir()
        _png(tmp_path / "0" / "good.png", 10)
        os.mkfifo(tmp_path / "0" / "a.png")
    with pytest.raises(UserError, match=r"evaluation file .*a\.(npz|png) is a FIFO"):
        load_labelled(tmp_path, (3, 16, 16))


def test_an_unreadable_evaluation_image_is_called_an_evaluation_file(tmp_path: Path) -> None:
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read evaluation file"):
        load_labelled(tmp_path, (3, 16, 16))
