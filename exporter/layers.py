"""Which PyTorch module each graph node came from: recorded at export, kept through onnxsim and every
variant, and found again for any node name an engine reports.

torch's TorchScript exporter names every node after the module scopes it was traced in:
``/layer1/layer1.0/conv1/Conv`` is the Conv traced inside ``layer1`` > ``layer1.0`` > ``conv1``. Each
segment is torch's *scope name* of one module call: the module's unqualified name (its path from the
last non-numeric atom on, so ``layer1.0`` but ``conv1``), with ``_1``, ``_2``... for its second, third
call (ResNet's block calls ``relu`` twice: ``relu`` then ``relu_1``). :func:`map_modules` resolves
each segment against the real module tree of the model that was traced (every segment must be a
child of the module before it, or the walk stops), so a node maps to a module that exists, never to a
guess; nodes traced outside any submodule (a ``torch.flatten`` in the model's own ``forward``) map to
none and are kept as *unmapped*, under their own names.

The map (:class:`exporter.artifact.LayerMap`) holds the node -> module table, the scope prefixes
(``/layer1/layer1.0/conv1`` -> ``layer1.0.conv1``), each module's class, and the unmapped nodes.

:class:`LayerIndex` answers :meth:`~LayerIndex.module_of` for any name of any graph of the
artifact, including names the graphs never held:

* variants: fp16 adds Casts, int8 QDQ adds QuantizeLinear/DequantizeLinear nodes named after tensors
  or weights (``onnx::Conv_193_DequantizeLinear``): plumbing nodes take the module of the layer whose
  tensor they carry, weights that of the layer reading them (:func:`map_variant`);
* onnxruntime's optimized graphs rename fused nodes: ``/conv1/Conv_token_1`` (a QLinearConv),
  ``fused /fc/Gemm`` (a FusedGemm: the Gemm with the activation after it),
  ``InsertedPrecisionFreeCast_...`` (an fp16 node it runs in fp32 on a CPU),
  ``/relu/Relu_output_0_nchwc`` (a Conv with its ReLU fused, named after the ReLU's output tensor):
  engine suffixes are stripped, tensor names lead to the node that produced them, and a fused
  compute node walks back from its activation to the convolution it absorbed;
* OpenVINO names layers after ONNX nodes (``/conv1/Conv/WithoutBiases``): the scope prefix finds them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import onnx

from .artifact import Artifact, LayerMap

#: Ops a compute node absorbs when an engine fuses them after it (onnxruntime's Conv+Activation,
#: Conv+Add+ReLU in its NCHWc kernels, OpenVINO's post-ops); an engine names the fused node after
#: the last of them, so the walk back from it must pass these to find the compute node.
EPILOGUE_OPS = frozenset(
    {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Add", "Sum", "Mul",
     "BatchNormalization", "QuantizeLinear", "DequantizeLinear"}
)  # fmt: skip
#: Ops that carry a tensor between representations: not layers of their own.
PLUMBING_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "Cast", "ReorderInput", "ReorderOutput", "Reorder"})
#: Engine ops that stand for an ONNX op of the graph (fused or quantized kernels).
_FAMILIES: dict[str, frozenset[str]] = {
    "Conv": frozenset({"Conv", "FusedConv", "QLinearConv", "NhwcFusedConv", "NhwcConv", "ConvInteger",
                       "Convolution", "GroupConvolution"}),
    "Gemm": frozenset({"Gemm", "QGemm", "FusedGemm", "MatMul", "FusedMatMul", "MatMulInteger", "QLinearMatMul",
                       "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "FullyConnected"}),
    "MaxPool": frozenset({"MaxPool", "NhwcMaxPool"}),
    "AveragePool": frozenset({"AveragePool", "QLinearAveragePool", "AvgPool"}),
    "GlobalAveragePool": frozenset({"GlobalAveragePool", "QLinearGlobalAveragePool"}),
    "Add": frozenset({"Add", "QLinearAdd", "Sum"}),
    "Concat": frozenset({"Concat", "QLinearConcat"}),
}  # fmt: skip
#: Suffixes (and prefixes) engines add to a node's or a tensor's name, stripped one at a time.
_SUFFIXES = (
    re.compile(r"_kernel_time$"),  # onnxruntime profiler event
    re.compile(r"^fused "),  # onnxruntime's Gemm+Activation (FusedGemm): "fused <the Gemm's name>"
    re.compile(r"^InsertedPrecisionFreeCast_"),  # onnxruntime running an fp16 graph's node in fp32 (CPU)
    re.compile(r"_fence_(before|after)$"),
    re.compile(r"_nchwc$"),
    re.compile(r"_token_\d+$"),
    re.compile(r"_quant$"),
    re.compile(r"_(QuantizeLinear|DequantizeLinear)(_(Output|Input))?$"),
    re.compile(r"/WithoutBiases$"),  # OpenVINO
    re.compile(r"_output_\d+$"),
    re.compile(r"_cast_?\d*$"),
)


def family(op_type: str) -> str:
    """The ONNX op an engine's op stands for (``QLinearConv`` -> ``Conv``), else the op itself."""
    for name, members in _FAMILIES.items():
        if op_type in members:
            return name
    return op_type


def unqualified(path: str) -> str:
    """torch's scope name of a module path: from its last non-numeric atom on (``layer1.0.conv1`` ->
    ``conv1``, ``layer1.0`` -> ``layer1.0``, ``features.3`` -> ``features.3``)."""
    atoms = path.split(".")
    for i in range(len(atoms) - 1, -1, -1):
        if not atoms[i].isnumeric():
            return ".".join(atoms[i:])
    return path


_REPEAT = re.compile(r"^(.*)_(\d+)$")


def _children(modules: Iterable[tuple[str, object]]) -> dict[str, dict[str, str]]:
    """module path -> {scope segment -> child path}, for the module tree ``named_modules`` gives."""
    out: dict[str, dict[str, str]] = {}
    for path, module in modules:
        table = out.setdefault(path, {})
        for child_name, _child in module.named_children():  # type: ignore[attr-defined]
            full = f"{path}.{child_name}" if path else child_name
            table[unqualified(full)] = full
    return out


def _walk(name: str, children: Mapping[str, Mapping[str, str]]) -> tuple[str, list[tuple[str, str]]]:
    """The deepest module a node name's scope segments lead to, and each scope prefix resolved."""
    if not name.startswith("/"):
        return "", []
    path, prefix, resolved = "", "", []
    for segment in name.split("/")[1:-1]:
        table = children.get(path, {})
        child = table.get(segment)
        repeat = _REPEAT.match(segment)
        if child is None and repeat:  # the module's second, third... call
            child = table.get(repeat.group(1))
        if child is None:
            break
        path, prefix = child, f"{prefix}/{segment}"
        resolved.append((prefix, path))
    return path, resolved


def map_modules(model: object, graph: onnx.ModelProto) -> LayerMap:
    """The layer map of ``graph`` as traced from ``model`` (an ``nn.Module``; read, never changed)."""
    named = list(model.named_modules())  # type: ignore[attr-defined]
    children = _children(named)
    types = {path: type(module).__name__ for path, module in named}
    nodes: dict[str, str] = {}
    scopes: dict[str, str] = {}
    unmapped: list[str] = []
    for node in graph.graph.node:
        path, resolved = _walk(node.name, children)
        scopes.update(resolved)
        if path:
            nodes[node.name] = path
        else:
            unmapped.append(node.name)
    used = set(nodes.values()) | set(scopes.values())
    return LayerMap(
        nodes=nodes,
        scopes=scopes,
        module_types={p: t for p, t in types.items() if p in used},
        unmapped=unmapped,
    )


@dataclass(frozen=True)
class Match:
    """Where a name led: the module (None: no module), the graph node it matched, and how."""

    module: str | None
    node: str | None = None
    via: str = "none"  # "node", "tensor", "fused", "scope", "structure", "none"


@dataclass
class _Graph:
    """What the index needs of a graph: each node's op and inputs, each tensor's producer."""

    op: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, list[str]] = field(default_factory=dict)
    producer: dict[str, str] = field(default_factory=dict)
    consumers: dict[str, list[str]] = field(default_factory=dict)
    initializers: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, model: onnx.ModelProto) -> _Graph:
        g = cls(initializers={t.name for t in model.graph.initializer})
        for node in model.graph.node:
            g.op[node.name] = node.op_type
            g.inputs[node.name] = [i for i in node.input if i]
            for o in node.output:
                if o:
                    g.producer[o] = node.name
            for i in node.input:
                if i:
                    g.consumers.setdefault(i, []).append(node.name)
        return g


def _candidates(name: str) -> list[str]:
    """``name`` and what is left of it as engine suffixes are stripped, one at a time."""
    out = [name]
    current = name
    for _ in range(6):
        for suffix in _SUFFIXES:
            stripped = suffix.sub("", current)
            if stripped != current and stripped:
                current = stripped
                out.append(current)
                break
        else:
            break
    return out


class LayerIndex:
    """Finds the module of any node name of an artifact's graphs (see the module docstring).

    ``layers`` is the fp32 graph's recorded map; ``base`` that graph (its structure leads tensor
    names to nodes and fused nodes to the compute node they absorbed); ``extra`` node -> module maps
    of other graphs (the variants' recorded maps).
    """

    def __init__(
        self,
        layers: LayerMap | None,
        base: onnx.ModelProto | None = None,
        extra: Iterable[Mapping[str, str]] = (),
    ) -> None:
        self.layers = layers
        self.nodes: dict[str, str] = dict(layers.nodes) if layers else {}
        for table in extra:
            for k, v in table.items():
                self.nodes.setdefault(k, v)
        self.scopes = dict(layers.scopes) if layers else {}
        self.graph = _Graph.of(base) if base is not None else _Graph()

    @property
    def known(self) -> bool:
        """Whether the artifact recorded a layer map at all (artifacts exported before it did not)."""
        return self.layers is not None

    def module_type(self, module: str | None) -> str | None:
        return self.layers.module_types.get(module) if self.layers and module is not None else None

    def nodes_of(self, module: str, *, children: bool = True) -> list[str]:
        """The fp32 graph's nodes that came from ``module`` (and, with ``children``, its submodules), in
        graph order: what to keep float when a layer must not be quantized."""
        prefix = module + "."
        base = self.layers.nodes if self.layers else {}
        return [n for n, m in base.items() if m == module or (children and m.startswith(prefix))]

    def module_of(self, name: str, op_type: str | None = None) -> str | None:
        """The module path the node ``name`` (running ``op_type``, where known) came from, or None."""
        return self.resolve(name, op_type).module

    def resolve(self, name: str, op_type: str | None = None) -> Match:
        for candidate in _candidates(name):
            if candidate in self.graph.op:
                node = self._compute_node(candidate, op_type)
                return Match(self.nodes.get(node) or self._scope(node), node, "fused" if node != candidate else "node")
            if candidate in self.nodes:  # a variant's node: its fp32 node, where it has one, carries its FLOPs
                module = self.nodes[candidate]
                base = self._base_node(name, op_type)
                return Match(module, base if base and self.nodes.get(base) == module else candidate, "node")
            producer = self.graph.producer.get(candidate)
            if producer is not None:
                node = self._compute_node(producer, op_type)
                return Match(self.nodes.get(node) or self._scope(node), node, "fused" if node != producer else "tensor")
        module = self._scope(name)
        return Match(module, None, "scope" if module else "none")

    def _base_node(self, name: str, op_type: str | None) -> str | None:
        """The fp32 graph's node that ``name`` (a variant's or an engine's name for it) stands for, if any."""
        for candidate in _candidates(name):
            if candidate in self.graph.op:
                return self._compute_node(candidate, op_type)
            producer = self.graph.producer.get(candidate)
            if producer is not None:
                return self._compute_node(producer, op_type)
        return None

    def _scope(self, name: str) -> str | None:
        """The module of the longest recorded scope prefix of ``name``."""
        parts = name.split("/")
        for end in range(len(parts) - 1, 1, -1):
            module = self.scopes.get("/".join(parts[:end]))
            if module is not None:
                return module
        return None

    def _compute_node(self, node: str, op_type: str | None) -> str:
        """The node an engine's ``op_type`` node named after ``node`` really is: where ``node`` is an
        activation, Add or Q/DQ the compute op absorbed, the walk goes back to that compute op."""
        if op_type is None:
            return node
        want = family(op_type)
        current = node
        for _ in range(6):
            op = self.graph.op.get(current)
            if op is None or family(op) == want or op not in EPILOGUE_OPS:
                return current if op is not None and family(op) == want else node
            sources = [self.graph.producer[i] for i in self.graph.inputs.get(current, []) if i in self.graph.producer]
            if not sources:
                return node
            matching = [s for s in sources if family(self.graph.op.get(s, "")) == want]
            current = matching[0] if matching else sources[0]
        return node


def map_variant(index: LayerIndex, variant: onnx.ModelProto) -> LayerMap:
    """The layer map of a variant graph: each node resolved through the fp32 graph's ``index``; plumbing
    nodes (Q/DQ, Cast) take the module of the tensor they carry, or, for weights, of their reader."""
    g = _Graph.of(variant)
    found: dict[str, str | None] = {}
    for node in variant.graph.node:
        match = index.resolve(node.name, node.op_type)
        found[node.name] = match.module
    for node in variant.graph.node:  # plumbing of activations: from the producer of what they carry
        if found[node.name] is None and node.op_type in PLUMBING_OPS and node.input:
            producer = g.producer.get(node.input[0])
            while producer is not None and found.get(producer) is None and g.op.get(producer) in PLUMBING_OPS:
                upstream = g.inputs.get(producer, [])
                producer = g.producer.get(upstream[0]) if upstream else None
            if producer is not None and found.get(producer):
                found[node.name] = found[producer]
    for node in reversed(variant.graph.node):  # plumbing of weights: from the layer reading them
        if found[node.name] is None and node.op_type in PLUMBING_OPS and node.input and node.input[0] in g.initializers:
            readers = [found.get(c) for o in node.output for c in g.consumers.get(o, [])]
            found[node.name] = next((m for m in readers if m), None)
    return LayerMap(
        nodes={k: v for k, v in found.items() if v},
        unmapped=[k for k, v in found.items() if not v],
    )


def layer_index(artifact: Artifact) -> LayerIndex:
    """The index of every graph of ``artifact``: its fp32 graph's map and structure, and each
    variant's recorded map. Where the artifact predates layer maps, :attr:`LayerIndex.known` is False
    and every name maps to no module (but still to the fp32 graph's node it came from)."""
    manifest = artifact.manifest
    base = onnx.load(str(artifact.path()), load_external_data=False) if artifact.path().is_file() else None
    extra = [v.layers.nodes for v in manifest.variants.values() if v.layers is not None]
    return LayerIndex(manifest.layers, base, extra)
