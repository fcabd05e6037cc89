"""Users' own models: ``path/to/file.py:Builder`` where Builder is a class or a function."""

from __future__ import annotations

import contextlib
import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import INTERRUPTS, UserError, describe_exception
from .files import file_problem

if TYPE_CHECKING:
    from torch import nn

_SHAPE = re.compile(r"^\s*\d+(\s*[x,]\s*\d+)*\s*$")


def parse_input_shape(text: str) -> tuple[int, ...]:
    """Parse ``3x224x224`` (or ``3,224,224``): the per-sample shape, batch excluded."""
    if not _SHAPE.match(text or ""):
        raise UserError(f"bad --input-shape {text!r}: expected positive integers like 3x224x224 (batch excluded)")
    dims = tuple(int(d) for d in re.split(r"[x,]", text.replace(" ", "")))
    if any(d < 1 for d in dims):
        raise UserError(f"bad --input-shape {text!r}: every dimension must be at least 1")
    if len(dims) > 4:
        raise UserError(f"bad --input-shape {text!r}: give the shape of one sample (at most 4 dims), not the batch")
    return dims


@contextlib.contextmanager
def kept_modes(model: object) -> Iterator[None]:
    """Restore the training flag of ``model`` and of each of its submodules on exit, whatever
    happens in between (an exception, Ctrl-C): what is done to a user's module never shows."""
    from torch import nn  # here, not at the top: parsing a command line needs no torch

    if not isinstance(model, nn.Module):
        yield
        return
    saved = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, training in saved:
            m.training = training  # not m.train(): that would set every child to the parent's flag


def is_user_model_ref(target: str) -> bool:
    """Whether a CLI target names a Python file and builder rather than a zoo model."""
    path, sep, _ = target.rpartition(":")
    return bool(sep) and path.endswith(".py")


def _failed_at(exc: BaseException, path: Path) -> str:
    """Where ``exc`` was raised, as `` at FILE:LINE (in NAME)``: the innermost frame in the user's file
    ``path`` (their line, even when it failed deep inside torch), else the innermost frame of all;
    "" when there is none to name. A message alone ("ValueError: boom") does not say where in their file."""
    import traceback

    # The outermost frame is the toolkit's own call into their code, and importlib's frozen frames are
    # no file anyone can open: neither is where it failed.
    frames = [f for f in traceback.extract_tb(exc.__traceback__)[1:] if not f.filename.startswith("<")]
    target = path.resolve()
    theirs = next((f for f in reversed(frames) if _same_file(f.filename, target)), None)
    if theirs is not None:  # named as they named it, as in the FILE.py:Builder they gave
        return f" at {path}:{theirs.lineno} (in {theirs.name})"
    return f" at {frames[-1].filename}:{frames[-1].lineno} (in {frames[-1].name})" if frames else ""


def _their_code_failed(what: str, exc: BaseException, path: Path) -> UserError:
    """One line for the user's own code failing: what failed, their line, and how."""
    return UserError(f"{what} failed{_failed_at(exc, path)}: {describe_exception(exc, placed=False)}")


def _same_file(filename: str, target: Path) -> bool:
    try:
        return Path(filename).resolve() == target
    except (OSError, RuntimeError):  # a symlink loop or an unreadable path: not theirs to name
        return False


def load_user_builder(ref: str) -> tuple[str, object]:
    """Import ``file.py`` and return (builder name, builder) for ``file.py:Builder``."""
    path_text, _, attr = ref.rpartition(":")
    path = Path(path_text)
    problem = file_problem(path)
    if problem == "does not exist":
        raise UserError(f"model file not found: {path}")
    if problem:  # a FIFO would block the import forever
        raise UserError(f"model file {path} {problem}: name the .py file that defines the builder")
    if not attr.isidentifier():
        raise UserError(f"bad model reference {ref!r}: expected path/to/file.py:Builder")
    mod_name = f"_exporter_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # a module may call sys.exit() at import, or raise its own BaseException
        del sys.modules[mod_name]
        if isinstance(exc, INTERRUPTS):
            raise
        raise _their_code_failed(f"importing {path}", exc, path) from exc
    if not hasattr(module, attr):
        # what the file itself defines that could build a model: not the modules and names it imports
        names = sorted(
            n
            for n, v in vars(module).items()
            if not n.startswith("_") and callable(v) and getattr(v, "__module__", None) == mod_name
        )
        raise UserError(f"{path} defines no {attr!r} (it defines: {', '.join(names) or 'no class or function'})")
    return attr, getattr(module, attr)


def _check_builder(ref: str, builder: object) -> None:
    """Refuse what cannot be called to build a model, saying what to name instead."""
    import inspect

    from torch import nn

    if isinstance(builder, nn.Module):
        raise UserError(
            f"{ref} is a {type(builder).__name__} instance, not a builder: name its class or a function that "
            "returns the model (the exporter calls the builder with no arguments)"
        )
    if not callable(builder):
        raise UserError(f"{ref} is a {type(builder).__name__}, not a class or function that returns the model")
    if inspect.iscoroutinefunction(builder) or inspect.isasyncgenfunction(builder):
        raise UserError(
            f"{ref} is an async function: the builder must be a plain function or class returning the model"
        )
    try:
        signature = inspect.signature(builder)
    except (TypeError, ValueError):  # some builtins and C extensions have none: just call them
        return
    required = [
        p.name
        for p in signature.parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise UserError(
            f"{ref} needs arguments ({', '.join(required)}): the builder is called with none; give them defaults "
            "or name a function that calls it with yours"
        )


def build_user_model(ref: str) -> tuple[str, nn.Module]:
    """Build the user's model: call the class or function with no arguments."""
    import inspect

    from torch import nn

    name, builder = load_user_builder(ref)
    path = Path(ref.rpartition(":")[0])
    _check_builder(ref, builder)
    try:
        model = builder()  # type: ignore[operator]
    except INTERRUPTS:
        raise
    except BaseException as exc:  # their own code: sys.exit() or their own BaseException too
        raise _their_code_failed(f"building {ref}", exc, path) from exc
    if inspect.iscoroutine(model):
        model.close()  # never awaited: closed, so Python does not warn about it at exit
        raise UserError(f"{ref}() returned a coroutine: the builder must return the model, not be async")
    if not isinstance(model, nn.Module):
        raise UserError(f"{ref}() returned {type(model).__name__}, not a torch.nn.Module")
    return name, model


def parse_input_sizes(texts: list[str]) -> list[tuple[int, int]]:
    """Parse ``--input-size`` values such as ``224x224 256x300`` into (height, width) pairs."""
    sizes = []
    for text in texts:
        parts = text.lower().replace(" ", "").split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) >= 1 for p in parts):
            raise UserError(f"bad --input-size {text!r}: expected HEIGHTxWIDTH with positive integers, e.g. 256x300")
        sizes.append((int(parts[0]), int(parts[1])))
    return sizes
