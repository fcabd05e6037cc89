"""Any ONNX file checked against an artifact's PyTorch reference: ``runtime.parity ARTIFACT --graph FILE``.

A graph rewritten by another tool (one's own surgery, onnxslim, Polygraphy, an optimizer) is not
recorded in the artifact's manifest, so nothing vouches for it. :func:`open_graph_file` reads it,
fingerprints it against every graph the manifest records (so the report can say plainly whether
it is one of them) and hands back its bytes for the same :func:`runtime.parity.check_artifact`
the recorded graphs get: the same inputs, batch sizes, input sizes and tolerances. Nothing is
written, and the artifact is only read (its manifest, and for ``--explain`` its fp32 graph);
a stale artifact is used as recorded, never rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exporter import artifact as art
from exporter.errors import UserError
from exporter.files import NotRegularFile, read_regular, sha256_bytes


@dataclass(frozen=True)
class GraphFile:
    """An ONNX file compared against an artifact, and how it relates to the graphs the artifact records."""

    path: Path
    sha256: str
    size_bytes: int
    #: sha256 of every graph the manifest records, by variant key (``fp32``, ``int8``...)
    recorded: dict[str, str]
    #: the recorded graph this file is byte-identical to, if any
    matches: str | None

    def statement(self, artifact: str) -> str:
        """The report's first line: whether the file is one of the artifact's recorded graphs."""
        if self.matches is not None:
            return (
                f"{self.path} is byte-identical to {artifact}'s recorded {self.matches} graph "
                f"(sha256 {self.sha256[:12]})"
            )
        recorded = ", ".join(f"{k} {v[:12]}" for k, v in self.recorded.items())
        return (
            f"{self.path} is NOT a graph recorded for {artifact} (sha256 {self.sha256[:12]}; recorded: {recorded}): "
            f"checked against {artifact}'s PyTorch reference as it stands"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "recorded": self.matches is not None,
            "graph_sha256": self.sha256,
            "matches": self.matches,
            "recorded_graphs": self.recorded,
        }


def open_artifact_as_recorded(ref: str, artifacts_dir: Path) -> tuple[art.Artifact, art.VariantKey | None]:
    """The artifact ``ref`` names, read as it is (nothing exported or rebuilt), and the graph a
    ``NAME[.variant].onnx`` reference names."""
    loc = art.locate(ref, artifacts_dir)
    if loc.zoo_default:
        raise UserError(
            f"no artifact named {loc.name} in {artifacts_dir}: --graph checks a file against an existing artifact's "
            f"PyTorch reference; export it first (python -m exporter {loc.name})"
        )
    return art.open_artifact(loc.directory), loc.key


def open_graph_file(path: str | Path, artifact: art.Artifact) -> tuple[GraphFile, bytes]:
    """Read ``path`` (a regular file) and fingerprint it against the graphs ``artifact`` records."""
    p = Path(path)
    try:
        data = read_regular(p, limit=None)
    except FileNotFoundError:
        raise UserError(f"--graph {p} does not exist") from None
    except NotRegularFile as exc:
        raise UserError(f"--graph {p} is {exc}") from exc
    except OSError as exc:
        raise UserError(f"--graph {p}: {exc.strerror}") from exc
    if not data:
        raise UserError(f"--graph {p} is empty")
    m = artifact.manifest
    recorded = {str(art.BASE): m.sha256, **{k: v.sha256 for k, v in m.variants.items()}}
    digest = sha256_bytes(data)
    matches = next((k for k, v in recorded.items() if v == digest), None)
    return GraphFile(p, digest, len(data), recorded, matches), data


def graph_key(asked: art.VariantKey | None, named: art.VariantKey | None, graph: GraphFile) -> art.VariantKey:
    """Which of the artifact's graphs the file stands for (whose tolerance and verification apply):
    ``--precision``, else the graph the artifact reference named, else the one it is identical to, else fp32."""
    if asked is not None and named is not None and asked != named:
        raise UserError(f"the artifact reference names its {named} graph, --precision says {asked}: give one")
    if asked is not None or named is not None:
        return asked or named  # type: ignore[return-value]
    return art.VariantKey.parse(graph.matches) if graph.matches else art.BASE
