"""Real images without a download: scikit-learn's handwritten digits, and users' own folders.

The digits set (1,797 grey 8x8 images, 10 classes) ships inside scikit-learn. Images are
upsampled to a model's input size and replicated over its channels, scaled to [-1, 1]
(the same range the toolkit's random test inputs use). A fixed stratified split keeps
a held-out set that training never sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError, first_line
from .files import file_problem

SPLIT_SEED = 0
TEST_FRACTION = 0.2
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
#: The most labelled images an evaluation set is read to.
EVAL_LIMIT = 50_000


@dataclass
class Split:
    x: torch.Tensor  # (N, C, H, W) float32 in [-1, 1]
    y: torch.Tensor  # (N,) int64


def _fit(x: torch.Tensor, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Resize (N, C, H, W) to the input's height/width and match its channel count."""
    channels, height, width = input_shape
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    if x.shape[1] != channels:
        x = x.mean(dim=1, keepdim=True)
        if channels != 1:
            x = x.expand(-1, channels, -1, -1)
    return x


def to_model_input(images: np.ndarray, input_shape: tuple[int, ...]) -> torch.Tensor:
    """(N, H, W) or (N, C, H, W) images with values in [0, 1] -> (N, *input_shape) in [-1, 1]."""
    x = torch.as_tensor(images, dtype=torch.float32)
    if x.ndim == 3:
        x = x[:, None]
    return (_fit(x, input_shape) * 2 - 1).contiguous()


def digits(input_shape: tuple[int, ...]) -> tuple[Split, Split]:
    """(train, held-out) splits of scikit-learn's digits, shaped for ``input_shape``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, bunch.target, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=bunch.target
    )
    return (
        Split(to_model_input(x_tr, input_shape), torch.as_tensor(y_tr, dtype=torch.int64)),
        Split(to_model_input(x_te, input_shape), torch.as_tensor(y_te, dtype=torch.int64)),
    )


def _calibration_files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise UserError(f"calibration directory not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES | {".npy", ".npz"})
    if not files:
        raise UserError(f"no PNG/JPEG/.npy/.npz files in {root}")
    for f in files:
        _regular(f, root, "calibration")
    return files


def _regular(f: Path, root: Path, what: str) -> None:
    """A FIFO would block the read forever, a link to /dev/zero never end: refused before reading."""
    problem = file_problem(f)
    if problem:
        raise UserError(f"{what} file {f} {problem}: remove it from {root}")


def _read_calibration_file(f: Path, channels: int, what: str = "calibration") -> torch.Tensor:
    """One calibration (or evaluation) file at its own size, (N, C, H, W) in the model's input range."""
    from PIL import Image

    try:
        if f.suffix.lower() in (".npy", ".npz"):
            loaded = np.load(f)
            arr = (loaded["x"] if f.suffix.lower() == ".npz" else loaded).astype(np.float32)
            arr = arr[None] if arr.ndim in (2, 3) else arr
            t = torch.as_tensor(arr)
            return t[:, None] if t.ndim == 3 else t
        img = np.asarray(Image.open(f).convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
        img = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
        return torch.as_tensor(img[None]) * 2 - 1
    except Exception as exc:
        raise UserError(f"cannot read {what} file {f}: {exc}") from exc


def load_calibration_dir(path: str | Path, input_shape: tuple[int, ...], limit: int = 512) -> torch.Tensor:
    """Calibration images from a folder: PNG/JPEG (scaled to [0, 1]) or ``.npy`` arrays.

    ``.npy`` files hold one image (C,H,W or H,W) or a batch (N,C,H,W) already in the
    model's input range; images are resized and converted to the model's channel count.
    """
    files = _calibration_files(Path(path))
    batches = [_fit(_read_calibration_file(f, input_shape[0]), input_shape) for f in files[:limit]]
    return torch.cat(batches)[:limit].contiguous()


def load_calibration_groups(
    path: str | Path, channels: int, min_size: tuple[int, int], limit: int = 512
) -> list[torch.Tensor]:
    """A folder's calibration images (as :func:`load_calibration_dir` reads them) at their own sizes, for a
    dynamic-size graph: one tensor per (height, width), each raised to ``min_size`` where smaller."""
    groups: dict[tuple[int, int], list[torch.Tensor]] = {}
    count = 0
    for f in _calibration_files(Path(path)):
        if count >= limit:
            break
        t = _read_calibration_file(f, channels)[: limit - count]
        h, w = max(t.shape[-2], min_size[0]), max(t.shape[-1], min_size[1])
        t = _fit(t, (channels, h, w))
        groups.setdefault((h, w), []).append(t)
        count += len(t)
    return [torch.cat(g).contiguous() for g in groups.values()]


def _labelled_files(root: Path) -> tuple[list[Path], list[list[Path]]]:
    """An evaluation set's files: its ``.npz`` files, else its image files per class (classes sorted)."""
    npz = [root] if root.suffix == ".npz" else sorted(root.glob("*.npz")) if root.is_dir() else []
    if npz:
        for f in npz:
            _regular(f, root if root.is_dir() else root.parent, "evaluation")
        return npz, []
    if not root.is_dir():
        raise UserError(f"evaluation set not found: {root}")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise UserError(f"{root} holds neither .npz files nor one subfolder per class")
    per_class = [sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) for folder in classes]
    for f in (f for files in per_class for f in files):
        _regular(f, root, "evaluation")
    return [], per_class


def _read_npz(f: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        with np.load(f) as data:
            x, y = torch.as_tensor(data["x"], dtype=torch.float32), torch.as_tensor(data["y"]).long()
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"cannot read {f} as x and y: {first_line(exc)}") from exc
    if len(x) != len(y):
        raise UserError(f"{f}: {len(x)} images but {len(y)} labels")
    return x, y


def count_labelled(path: str | Path, limit: int = EVAL_LIMIT) -> int:
    """How many labelled images :func:`load_labelled` would return from ``path``, without decoding images
    (an ``.npz``'s arrays are read): known before a model's input shape is."""
    root = Path(path)
    npz, per_class = _labelled_files(root)
    n = sum(len(_read_npz(f)[1].reshape(-1)) for f in npz) + sum(len(files) for files in per_class)
    if not n:
        raise UserError(f"no labelled images in {root}")
    return min(n, limit)


def load_labelled(path: str | Path, input_shape: tuple[int, ...], limit: int = EVAL_LIMIT) -> Split:
    """A labelled evaluation set: an ImageFolder (one subfolder per class, classes in sorted order, as
    torchvision numbers them; images resized to the model's input) or ``.npz`` files holding ``x``
    (N, C, H, W in the model's input range, or N, H, W) and integer ``y``."""
    root = Path(path)
    npz, per_class = _labelled_files(root)
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    for f in npz:
        x, y = _read_npz(f)
        xs.append(_fit(x[:, None] if x.ndim == 3 else x, input_shape))
        ys.append(y.reshape(-1))
    for label, files in enumerate(per_class):
        for f in files:
            xs.append(_fit(_read_calibration_file(f, input_shape[0], "evaluation"), input_shape))
            ys.append(torch.tensor([label]))
    if not xs:
        raise UserError(f"no labelled images in {root}")
    return Split(torch.cat(xs)[:limit].contiguous(), torch.cat(ys)[:limit])


def random_input(input_shape: tuple[int, ...], batch: int, seed: int) -> torch.Tensor:
    """Fresh random input uniform in [-1, 1) (never all zeros), reproducible from ``seed``.

    The same range as the digits and calibration images, so every check and every
    quantization calibration sees inputs from one distribution.
    """
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((batch, *input_shape), generator=gen) * 2 - 1


def check_batch(
    input_shape: tuple[int, ...], batch: int, index: int, *, seed: int, held_out: Split | None = None
) -> torch.Tensor:
    """The ``index``-th batch a parity check feeds: a window of ``held_out`` digits where given and
    large enough, else uniform noise seeded ``seed + index``. One definition for the parity check,
    its per-layer explanation and the int8 input-rounding floor, so all three see the same inputs."""
    if held_out is not None and batch <= len(held_out.x):
        start = (index * 37) % (len(held_out.x) - batch + 1)
        return held_out.x[start : start + batch]
    return random_input(input_shape, batch, seed=seed + index)


def accuracy(logits: np.ndarray | torch.Tensor, labels: torch.Tensor) -> float:
    pred = np.asarray(logits).argmax(axis=1)
    return float((pred == labels.numpy()).mean())
