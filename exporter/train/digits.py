"""Training the small zoo models on scikit-learn's digits (see :mod:`exporter.train`).

A short CPU run (Adam, cosine schedule) on the training split; the held-out accuracy is
measured and stored with the checkpoint at ``artifacts/NAME/NAME.digits.pth`` (its ``meta``
names the dataset, which is how parity knows to feed held-out digits), and
``python -m exporter NAME --weights ...`` exports it like any other state_dict. The
command is ``python -m exporter.train`` (:mod:`exporter.train.__main__`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import artifact as art
from ..data import accuracy, digits
from ..errors import UserError, first_line
from ..files import atomic_outputs, made_folder, require_free_space
from ..zoo import get_spec
from . import DIGITS_MODELS

# Per-model settings that converge in a short CPU run; plain deep nets (no BatchNorm) need a gentler rate.
RECIPES: dict[str, dict[str, float]] = {
    "lenet5": {"epochs": 30, "lr": 3e-3},
    "alexnet_cifar": {"epochs": 12, "lr": 1e-3},
    "vgg16_cifar": {"epochs": 8, "lr": 1e-4},
    "googlenet_cifar": {"epochs": 15, "lr": 1e-3},
    "resnet_cifar": {"epochs": 12, "lr": 1e-3},
}


def kaiming_init(model: nn.Module) -> None:
    """torchvision's initialisation for plain (BatchNorm-free) deep nets.

    PyTorch's default init shrinks activations by about 1/sqrt(3) per ReLU layer, so the
    seeds' 13-conv VGG and 22-layer GoogLeNet start with vanishing logits and gradients
    and a short run never leaves chance level. The architecture is unchanged.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


@dataclass
class TrainResult:
    name: str
    checkpoint: Path
    test_accuracy: float
    train_accuracy: float
    epochs: int
    seconds: float


def checkpoint_path(name: str, output_dir: str | Path = art.DEFAULT_ARTIFACTS_DIR) -> Path:
    return art.artifact_dir(name, output_dir) / f"{name}.digits.pth"


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    model.eval()
    with torch.inference_mode():
        logits = torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])
    return accuracy(logits.numpy(), y)


def train(
    name: str,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int = 64,
    seed: int = 0,
    output_dir: str | Path = art.DEFAULT_ARTIFACTS_DIR,
    log=print,
) -> TrainResult:  # type: ignore[no-untyped-def]
    """Train ``name`` on the digits training split and save its state_dict with the figures.

    A run that diverges (a loss or a weight not finite) or ends at chance on the held-out split
    raises :class:`UserError` and writes nothing: a checkpoint already there stays as it was.
    """
    spec = get_spec(name)
    if spec.num_classes != 10:
        raise UserError(
            f"{name} has {spec.num_classes} classes; digits training needs a 10-class model "
            f"({', '.join(DIGITS_MODELS)})"
        )
    recipe = RECIPES.get(name, {"epochs": 10, "lr": 1e-3})
    epochs = int(recipe["epochs"] if epochs is None else epochs)
    lr = float(recipe["lr"] if lr is None else lr)
    if epochs < 1 or not (math.isfinite(lr) and lr > 0) or batch_size < 1:
        raise UserError("epochs and batch size must be at least 1 and the learning rate a positive number")
    path = checkpoint_path(name, output_dir)
    # Made before minutes of training, not after; removed again if the run fails or is interrupted.
    with made_folder(path.parent):
        torch.manual_seed(seed)
        train_set, test_set = digits(spec.input_shape)
        model = spec.build()
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            kaiming_init(model)
        fix = f"; nothing written{_kept(path)}; lower --lr (the recipe's is {recipe['lr']:g})"
        started = time.perf_counter()
        _fit(name, model, train_set, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, log=log, fix=fix)
        seconds = time.perf_counter() - started
        test_acc = evaluate(model, test_set.x, test_set.y)
        train_acc = evaluate(model, train_set.x, train_set.y)
        _check_learned(name, model, test_acc, len(test_set.x), spec.num_classes, path, recipe)
        meta = {
            "model": name,
            "dataset": "sklearn digits",
            "split_seed": 0,
            "test_accuracy": test_acc,
            "train_accuracy": train_acc,
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "seed": seed,
            "seconds": round(seconds, 1),
            "train_size": len(train_set.x),
            "test_size": len(test_set.x),
        }
        _save(model.state_dict(), meta, path)
    return TrainResult(name, path, test_acc, train_acc, epochs, seconds)


def _kept(path: Path) -> str:
    return f", {path} kept as it was" if path.exists() else ""


def _fit(
    name: str, model: nn.Module, data, *, epochs: int, lr: float, batch_size: int, seed: int, log, fix: str
) -> None:  # type: ignore[no-untyped-def]
    """Adam with a cosine schedule; stops at the first loss that is not finite (the run diverged)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(data.x), generator=gen)
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            opt.zero_grad()
            loss = loss_fn(model(data.x[idx]), data.y[idx])
            value = loss.item()
            if not math.isfinite(value):
                raise UserError(f"{name} diverged in epoch {epoch + 1}/{epochs} (loss {value}){fix}")
            loss.backward()
            opt.step()
            total += value * len(idx)
        sched.step()
        log(f"{name} epoch {epoch + 1}/{epochs}: loss {total / len(order):.4f}")


def _check_learned(
    name: str, model: nn.Module, accuracy: float, n: int, classes: int, path: Path, recipe: dict[str, float]
) -> None:
    """Refuse weights that are not finite, or whose held-out accuracy is at chance: such a checkpoint
    must never replace a trained one (nor be suggested for export)."""
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(
            f"{name} diverged: {bad[0]} holds values that are not finite; nothing written{_kept(path)}; "
            f"lower --lr (the recipe's is {recipe['lr']:g})"
        )
    chance = 1 / classes
    # four standard errors above chance on n held-out samples: below that, the model did not learn
    if accuracy < chance + 4 * math.sqrt(chance * (1 - chance) / n):
        raise UserError(
            f"{name} did not learn: held-out accuracy {accuracy:.1%} is at chance ({chance:.0%} for {classes} "
            f"classes, n={n}); nothing written{_kept(path)}; try the recipe (--epochs {recipe['epochs']:g}, "
            f"--lr {recipe['lr']:g}) or more epochs"
        )


def _save(state: dict[str, torch.Tensor], meta: dict[str, object], path: Path) -> None:
    require_free_space(path.parent, sum(t.numel() * t.element_size() for t in state.values()), path.name)
    with atomic_outputs(path.parent) as writer:
        tmp = writer.path_for(path)
        try:
            torch.save({"state_dict": state, "meta": meta}, tmp)
        except RuntimeError as exc:  # torch's writer reports a full disk as "unexpected pos ..."
            raise UserError(f"cannot write {path}: {first_line(exc)} (is the disk full?)") from exc
        writer.write_json(path.with_suffix(".json"), meta)


def export_trained(
    name: str,
    checkpoint: Path,
    output_dir: str | Path = art.DEFAULT_ARTIFACTS_DIR,
    precisions: tuple[str, ...] = ("fp16", "int8"),
) -> dict[str, float]:
    """Export a trained model and its variants; return held-out digits accuracy per graph.

    Each figure is the one the graph's own verification measured (parity on held-out digits).
    """
    from ..export import export_model
    from ..variants import build_variant

    result = export_model(name, weights=checkpoint, output_dir=output_dir)
    acc = result.manifest.parity.accuracy
    assert acc is not None, "digits-trained weights are verified on held-out digits"
    scores = {"pytorch_fp32": acc.pytorch_fp32, "onnx_fp32": acc.onnx}
    for precision in precisions:
        record = build_variant(result.directory, art.VariantKey(precision)).record
        assert record.parity.accuracy is not None
        scores[f"onnx_{precision}"] = record.parity.accuracy.onnx
    return scores
