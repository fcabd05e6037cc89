"""Checking, simplifying and inspecting ONNX graphs."""

from __future__ import annotations

import collections
from pathlib import Path

import onnx

from .errors import ExportFailed, UserError
from .files import file_problem
from .trace import BATCH_DIM


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX file, turning a missing or corrupt file into one clear message."""
    p = Path(path)
    problem = file_problem(p)
    if problem == "does not exist":
        raise UserError(f"ONNX file not found: {p}")
    if problem:  # a FIFO would block onnx.load forever, a link to /dev/zero never end
        raise UserError(f"{p} {problem}: name the .onnx file itself")
    try:
        return onnx.load(str(p))
    except Exception as exc:
        raise UserError(f"{p} is not a readable ONNX model ({type(exc).__name__}: {exc})") from exc


def check_graph(model: onnx.ModelProto, what: str = "graph") -> onnx.ModelProto:
    """Run the ONNX checker (full check) and strict shape inference; return the inferred model."""
    try:
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise ExportFailed(f"{what} failed the ONNX checker: {str(exc).strip().splitlines()[0]}") from exc


def simplify_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """Simplify with onnxsim (constant folding, dead-node removal, fusions) and re-check."""
    import onnxsim

    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception as exc:
        raise ExportFailed(f"onnxsim failed: {str(exc).strip().splitlines()[0]}") from exc
    if not ok:
        raise ExportFailed("onnxsim could not validate the simplified graph against the original")
    simplified = check_graph(simplified, "simplified graph")
    missing = [name for name, dims in io_shapes(simplified).items() if not dims or dims[0] != BATCH_DIM]
    if missing:
        raise ExportFailed(f"simplification lost the symbolic batch on {', '.join(missing)}")
    return simplified


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    dims: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_param"):
            dims.append(d.dim_param)
        elif d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append("?")
    return dims


def io_shapes(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """Shapes of graph inputs and outputs (symbolic dims as their names), weights excluded."""
    inits = {i.name for i in model.graph.initializer}
    vis = [i for i in model.graph.input if i.name not in inits] + list(model.graph.output)
    return {vi.name: _dims(vi) for vi in vis}


def io_spec(model: onnx.ModelProto) -> dict[str, list[dict[str, object]]]:
    """Names, shapes and element types of inputs and outputs, for the manifest."""
    inits = {i.name for i in model.graph.initializer}

    def one(vi: onnx.ValueInfoProto) -> dict[str, object]:
        elem = vi.type.tensor_type.elem_type
        return {"name": vi.name, "shape": _dims(vi), "dtype": onnx.helper.tensor_dtype_to_np_dtype(elem).name}

    return {
        "inputs": [one(i) for i in model.graph.input if i.name not in inits],
        "outputs": [one(o) for o in model.graph.output],
    }


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each operator type the top-level graph holds."""
    return dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))


def topological_sort(model: onnx.ModelProto) -> onnx.ModelProto:
    """Reorder top-level nodes so each comes after the producers of its inputs (stable otherwise).

    Some converters (onnxruntime's float16 one) append nodes such as input Casts at the end.
    """
    graph = model.graph
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise ExportFailed(f"graph has a cycle or a dangling input near node {pending[0].name!r}")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)
    return model
