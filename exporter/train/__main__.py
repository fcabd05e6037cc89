"""``python -m exporter.train``: train small zoo models on the digits, optionally export them; print."""

from __future__ import annotations

import sys

from .. import options
from ..console import Column, CommandParser, Console
from ..errors import run_guarded
from . import DIGITS_MODELS


def build_parser() -> CommandParser:
    p = CommandParser(
        prog="python -m exporter.train", description="Train small zoo models on scikit-learn's digits (no download)."
    )
    p.add_argument(
        "models",
        nargs="*",
        default=list(DIGITS_MODELS),
        help=f"zoo models to train (default: {' '.join(DIGITS_MODELS)})",
    )
    p.add_argument(
        "--epochs",
        type=int,
        metavar="N",
        help="passes over the training split (default: each model's recipe, lenet5 30)",
    )
    p.add_argument(
        "--lr", type=float, metavar="RATE", help="Adam's learning rate (default: each model's recipe, lenet5 0.003)"
    )
    options.batch_size(p, many=False, default=64, help="training batch size (default 64)")
    p.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seed of the initial weights and the batch order (default 0)"
    )
    options.artifacts_dir(p, writes=True, old=("--output-dir",))
    p.add_argument(
        "--export",
        action="store_true",
        help="then export each model with its weights, build fp16 and int8 variants, print accuracies",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    table: dict[str, dict[str, float]] = {}
    from .digits import export_trained, train  # torch: only once the arguments are right

    def run_all() -> int:
        for name in args.models:
            r = train(
                name,
                epochs=args.epochs,
                lr=args.lr,
                batch_size=args.batch_size,
                seed=args.seed,
                output_dir=args.artifacts_dir,
            )
            print(
                f"{name}: held-out accuracy {r.test_accuracy:.2%} (train {r.train_accuracy:.2%}), "
                f"{r.epochs} epochs in {r.seconds:.0f}s -> {r.checkpoint}"
            )
            if args.export:
                table[name] = export_trained(name, r.checkpoint, args.artifacts_dir)
            else:
                print(f"  export it: python -m exporter {name} --weights {r.checkpoint}")
        if table:
            print_table(table)
        return 0

    return run_guarded(run_all, interrupted="no checkpoint written for the model in progress")


def print_table(table: dict[str, dict[str, float]]) -> None:
    if table:
        cols = [Column("model")] + [
            Column(c, True) for c in ("PyTorch fp32", "ONNX fp32", "ONNX fp16", "ONNX int8", "int8 - fp32")
        ]
        rows = [
            [
                name,
                f"{sc['pytorch_fp32']:.2%}",
                f"{sc['onnx_fp32']:.2%}",
                f"{sc['onnx_fp16']:.2%}",
                f"{sc['onnx_int8']:.2%}",
                f"{(sc['onnx_int8'] - sc['onnx_fp32']) * 100:+.2f} pp",
            ]
            for name, sc in table.items()
        ]
        Console(sys.stdout).table(cols, rows, title="Held-out digits accuracy (n=360)")


if __name__ == "__main__":
    sys.exit(main())
