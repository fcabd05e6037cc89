"""What ``--precision auto`` must keep: one metric and its threshold, and the tolerance that verifies it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from exporter.artifact import Tolerance
from exporter.errors import UserError

#: Default budget of a model without labelled data: the output's SQNR against PyTorch fp32. 25 dB is
#: noise at 1/18 of the signal's amplitude (cosine about 0.997).
DEFAULT_MIN_SQNR_DB = 25.0
#: Default budget where labels exist (digits-trained weights, ``--eval-dir``): top-1 within this many points.
DEFAULT_MAX_ACCURACY_DROP_PP = 0.3


@dataclass(frozen=True)
class Budget:
    """``sqnr``: output SQNR >= threshold dB; ``cosine``: every sample's cosine >= threshold;
    ``accuracy``: top-1 on the labelled set at most threshold points below PyTorch fp32's."""

    metric: str
    threshold: float

    def describe(self) -> str:
        return {
            "sqnr": f"output SQNR >= {self.threshold:g} dB",
            "cosine": f"output cosine >= {self.threshold:g}",
            "accuracy": f"top-1 within {self.threshold:g} points of PyTorch fp32",
        }[self.metric]

    def tolerance(self, base: Tolerance) -> Tolerance:
        """``base`` (int8's default, or its input-rounding floor) with this budget's demand in it."""
        if self.metric == "sqnr":
            return base.model_copy(update={"min_sqnr_db": self.threshold})
        if self.metric == "cosine":
            return base.model_copy(update={"min_cosine": self.threshold})
        return base.model_copy(update={"max_accuracy_drop": self.threshold / 100})


def default_budget(labelled: bool) -> Budget:
    """Accuracy where labels exist, else SQNR."""
    return Budget("accuracy", DEFAULT_MAX_ACCURACY_DROP_PP) if labelled else Budget("sqnr", DEFAULT_MIN_SQNR_DB)


def needs_labels(budget: Budget, labelled: bool) -> None:
    if budget.metric == "accuracy" and not labelled:
        raise UserError(
            "--max-accuracy-drop needs labelled images: --eval-dir DIR (ImageFolder or .npz with x and y), "
            "or digits-trained weights"
        )


#: The fewest labelled images an accuracy budget is judged on, however loose the budget: below it a top-1
#: figure is a handful of images, not an accuracy.
MIN_EVAL_IMAGES = 100


def min_eval_images(max_drop_pp: float) -> int:
    """The fewest labelled images that resolve a top-1 budget of ``max_drop_pp`` points.

    With n images top-1 moves in steps of 100/n points, so a budget under one step is not a budget: one
    image flipped already breaks it. The rule: 100/n at most the budget (n >= 100/PP) and n >= 100
    (:data:`MIN_EVAL_IMAGES`). A budget of 0 (no image may be lost) needs only the 100.
    """
    if max_drop_pp <= 0:
        return MIN_EVAL_IMAGES
    return max(MIN_EVAL_IMAGES, math.ceil(100 / max_drop_pp - 1e-9))  # 1e-9: 100/0.25 is 400, not 401


def check_eval_size(budget: Budget, n: int) -> None:
    """Refuse an accuracy ``budget`` that ``n`` labelled images cannot resolve (:func:`min_eval_images`)."""
    if budget.metric != "accuracy":
        return
    need = min_eval_images(budget.threshold)
    if n < need:
        raise UserError(
            f"{n} labelled images are too few for a budget of {budget.threshold:g} top-1 points: they measure "
            f"top-1 in steps of {100 / max(n, 1):.3g} points (100/{n}); it needs at least {need} images (one image's "
            f"step at most the budget, and at least {MIN_EVAL_IMAGES} images)"
        )


def budget_from(max_loss_db: float | None, min_cosine: float | None, max_accuracy_drop: float | None) -> Budget | None:
    """The budget the flags name (at most one); None: the search's default (:func:`default_budget`)."""
    given = [(m, v) for m, v in (("sqnr", max_loss_db), ("cosine", min_cosine), ("accuracy", max_accuracy_drop))
             if v is not None]  # fmt: skip
    if len(given) > 1:
        raise UserError("give one budget: --max-loss-db, --min-cosine or --max-accuracy-drop")
    if not given:
        return None
    metric, value = given[0]
    if not math.isfinite(value):
        raise UserError(f"the budget must be a finite number, got {value}")
    if metric == "sqnr" and value <= 0:  # below 0 dB the noise is larger than the output itself
        raise UserError(f"--max-loss-db is the output SQNR to keep, in dB above 0, got {value:g}")
    if metric == "cosine" and not 0 < value <= 1:
        raise UserError(f"--min-cosine must be in (0, 1], got {value:g}")
    if metric == "accuracy" and not 0 <= value <= 100:
        raise UserError(f"--max-accuracy-drop is in percentage points, 0 to 100, got {value:g}")
    return Budget(metric, float(value))
