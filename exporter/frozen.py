"""Python in ``forward()`` that a trace freezes into the graph: found, placed in the user's code, reported.

torch's tracer records tensor operations. Python decisions taken on the way are not recorded:
an ``if`` on a tensor's values (``if (x > 2).any():``) or on the batch size
(``if x.shape[0] > 8:``), ``int(x.shape[0])``, a loop over ``range(x.shape[0])``. The graph keeps
what they decided for the export's example input, and computes that for every other input.
Two ways to find them, both placed at the innermost frame outside torch (the user's line):

* **TracerWarnings.** torch warns wherever a tensor becomes a Python value (bool, int, float,
  list, NumPy array) while tracing. :func:`tracer_warnings` collects them instead of letting
  them vanish.
* **Two traces.** Some freezes warn nothing: ``for i in range(x.shape[0])`` is unrolled in
  silence. :func:`compare_traces` traces the forward at the export's example and at another
  batch (and, for a dynamic-size graph, another height and width): graphs of different
  structure mean Python depended on the shape.

Neither can see a branch the example did not reach and no other batch reaches either (a
threshold at batch 64 with both traces below it): that is what the warnings are for.
Nothing here prints; the notes are :class:`exporter.artifact.TraceNote` records.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import itertools
import linecache
import os
import re
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from .artifact import TraceNote
from .errors import ExportFailed, first_line

_TORCH = str(Path(torch.__file__).resolve().parent) + os.sep
#: Our own tracing machinery: never where the user's code is.
_OURS = {str(Path(__file__).resolve())}
#: Modules the exporter swaps in on purpose, whose Python is not what the graph holds: a
#: fixed-size export's static pools freeze their bins at the traced size by design (see
#: :class:`exporter.pooling.DynamicAdaptivePool2d`), and the native LRN exports as one ``LRN``
#: node whatever its Python forward does (:mod:`exporter.trace`).
_DELIBERATE = {str(Path(__file__).with_name(f).resolve()) for f in ("pooling.py", "trace.py")}
#: torch's own guards for empty tensors (``if input.numel() == 0: return input`` in
#: ``F.local_response_norm``...): they freeze nothing a non-empty input can reach.
_EMPTY_GUARD = re.compile(r"^\s*if\s+\w+\.numel\(\)\s*==\s*0\s*:")
_RANGE = re.compile(r"^(.*)\((\d+)\): (.*)$")

#: torch's TracerWarning openings, in plain words: what the graph keeps.
_MEANINGS = (
    ("Python boolean", "a Python condition on a tensor (its values or its shape): the graph keeps only the branch "
     "the export's example input took"),
    ("Python integer", "a tensor turned into a Python number: the graph keeps the value it had for the export's "
     "example input"),
    ("Python float", "a tensor turned into a Python number: the graph keeps the value it had for the export's "
     "example input"),
    ("Python number", "a tensor turned into a Python number: the graph keeps the value it had for the export's "
     "example input"),
    ("Python index", "a tensor used as a Python index: the graph keeps the value it had for the export's example "
     "input"),
    ("Python list", "a tensor turned into a Python list: the graph keeps its values for the export's example input"),
    ("NumPy array", "a tensor turned into a NumPy array: the graph keeps its values for the export's example input"),
    ("Using len", "len() of a tensor: the graph keeps the batch size of the export's example input"),
    ("Iterating over a tensor", "a Python loop over a tensor: the graph keeps the number of iterations of the "
     "export's example input"),
    ("registered as constants", "a tensor built from Python values in forward(): the graph keeps the values of "
     "the export's example input"),
)  # fmt: skip


def _shown(path: str) -> str:
    """A file as the user would name it: relative to the working folder where it is inside it."""
    with contextlib.suppress(ValueError):
        rel = os.path.relpath(path)
        if not rel.startswith(".."):
            return rel
    return path


Frame = tuple[str, int, str | None]  # file, line, source text


@functools.lru_cache(maxsize=4096)
def _real(filename: str) -> str:
    return str(Path(filename).resolve()) if filename and not filename.startswith("<") else filename


def _user_frame(frames: Sequence[Frame]) -> tuple[Frame | None, bool]:
    """The innermost (first) frame outside torch and the exporter's tracing code, and whether the
    code there is a module the exporter swapped in on purpose (then it is not the user's)."""
    for filename, lineno, code in frames:
        real = _real(filename)
        if real.startswith(_TORCH) or real in _OURS or real == _real(warnings.__file__):
            continue
        return (filename, lineno, code), real in _DELIBERATE
    return None, False


def _note(frame: Frame | None, message: str) -> TraceNote:
    if frame is None:
        return TraceNote(message=message)
    filename, lineno, code = frame
    return TraceNote(file=_shown(filename), line=lineno, code=(code or "").strip() or None, message=message)


def _meaning(text: str) -> str:
    for phrase, meaning in _MEANINGS:
        if phrase in text:
            return meaning
    return first_line(text).split(". ")[0]


class NoteList(list[TraceNote]):
    """Notes in the order found, one per place in the code."""

    def add(self, note: TraceNote) -> None:
        if not any((n.file, n.line) == (note.file, note.line) and n.file is not None for n in self):
            self.append(note)


@contextlib.contextmanager
def tracer_warnings(notes: NoteList) -> Iterator[None]:
    """Collect torch's TracerWarnings as notes placed at the user's line; every other warning is dropped
    (the exporter's output stays one line per fact)."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if not issubclass(category, torch.jit.TracerWarning):
            return
        stack = [(f.filename, f.lineno or 0, f.line) for f in reversed(traceback.extract_stack())]
        inner = next((s for s in stack if _real(s[0]).startswith(_TORCH)), None)
        if inner is not None and _EMPTY_GUARD.match(inner[2] or ""):
            return
        frame, deliberate = _user_frame(stack)
        if not deliberate:  # a pool the exporter swapped in fixes its bins at the traced size on purpose
            notes.add(_note(frame, _meaning(str(message))))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", torch.jit.TracerWarning)  # every place, not once per process
        warnings.showwarning = show
        try:
            yield
        finally:
            warnings.showwarning = previous


# --- two traces ------------------------------------------------------------------------------


def _attribute(node: torch._C.Node, name: str) -> object:
    value = getattr(node, node.kindOf(name))(name)
    return _comparable(value)


def _comparable(value: object) -> object:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return ("tensor", str(t.dtype), tuple(t.shape), hashlib.sha256(data).hexdigest())
    if isinstance(value, (list, tuple)):
        return tuple(_comparable(v) for v in value)
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if isinstance(value, torch._C.Graph):  # an autograd Function's subgraph: its structure, not its shapes
        return tuple(_structure(value)[0])
    return str(value)


def _structure(graph: torch._C.Graph) -> tuple[list[tuple[object, ...]], list[torch._C.Node]]:
    """The graph's operations in order, with how they connect and their constants, without shapes."""
    ids = {v.unique(): f"in{i}" for i, v in enumerate(graph.inputs())}
    rows: list[tuple[object, ...]] = []
    nodes: list[torch._C.Node] = []

    def walk(block_nodes: Iterator[torch._C.Node]) -> None:
        for node in block_nodes:
            inputs = tuple(ids.get(v.unique(), "?") for v in node.inputs())
            attrs = tuple((a, _attribute(node, a)) for a in sorted(node.attributeNames()))
            extra = (node.pyname(), repr(node.scalar_args())) if node.kind() == "prim::PythonOp" else None
            for j, v in enumerate(node.outputs()):
                ids[v.unique()] = f"{len(rows)}.{j}"
            rows.append((node.kind(), inputs, attrs, extra))
            nodes.append(node)
            for block in node.blocks():
                walk(block.nodes())

    walk(graph.nodes())
    rows.append(("return", tuple(ids.get(v.unique(), "?") for v in graph.outputs())))
    return rows, nodes


def _node_frame(node: torch._C.Node) -> Frame | None:
    frames: list[Frame] = []
    for text in node.sourceRange().splitlines():
        m = _RANGE.match(text.strip())
        if m:
            frames.append((m.group(1), int(m.group(2)), None))
    frame, deliberate = _user_frame(frames)
    if frame is None or deliberate:
        return None
    return frame[0], frame[1], linecache.getline(frame[0], frame[1]) or None


def _forward_frame(model: nn.Module) -> Frame | None:
    with contextlib.suppress(TypeError, OSError):
        lines, start = inspect.getsourcelines(type(model).forward)
        return inspect.getsourcefile(type(model).forward) or "", start, lines[0]
    return None


def trace_graph(model: nn.Module, x: torch.Tensor, what: str) -> tuple[torch._C.Graph, list[torch.Tensor]]:
    """The TorchScript graph torch's ONNX exporter traces from ``model`` on (a copy of) ``x``, and the outputs."""
    try:
        with torch.no_grad():
            graph, outs = torch.jit._get_trace_graph(model, (x.clone(),), strict=False)
    except Exception as exc:
        shape = "x".join(str(d) for d in x.shape)
        raise ExportFailed(f"{what}: tracing the forward pass at input {shape} failed: {first_line(exc)}") from exc
    flat = list(outs) if isinstance(outs, (tuple, list)) else [outs]
    return graph, [t for t in flat if isinstance(t, torch.Tensor)]


def _describe(x: torch.Tensor, sized: bool) -> str:
    return f"batch {x.shape[0]}" + (f" at {x.shape[-2]}x{x.shape[-1]}" if sized else "")


def compare_traces(
    model: nn.Module, example: torch.Tensor, other: torch.Tensor, notes: NoteList, *, sized: bool, what: str
) -> list[torch.Tensor]:
    """Trace ``model`` at ``example`` and at ``other`` (another batch, and with ``sized`` another height
    and width); where the graphs differ, add a note at the first line that differs. Returns the outputs
    at ``other`` (their first dimension must follow its batch)."""
    graph_a, _ = trace_graph(model, example, what)
    graph_b, outs = trace_graph(model, other, what)
    rows_a, nodes_a = _structure(graph_a)
    rows_b, nodes_b = _structure(graph_b)
    if rows_a == rows_b:
        return outs
    k = next((i for i, (a, b) in enumerate(zip(rows_a, rows_b)) if a != b), min(len(rows_a), len(rows_b)))
    # The first differing node of either graph with a line of the user's: where one graph goes on
    # (another loop iteration) while the other has already left the loop.
    after = [n for pair in itertools.zip_longest(nodes_a[k:], nodes_b[k:]) for n in pair if n is not None]
    frame = next((f for n in after if (f := _node_frame(n)) is not None), None)
    depends = "the batch size or the input size" if sized else "the batch size"
    notes.add(
        _note(
            frame or _forward_frame(model),
            f"forward() traces to a different graph at {_describe(other, sized)} than at "
            f"{_describe(example, sized)}: Python code depends on {depends} (a loop such as "
            f"range(x.shape[0]) is unrolled); the graph is fixed to what {_describe(example, sized)} computed",
        )
    )
    return outs
