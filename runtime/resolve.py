"""Turn a runtime command's artifact argument into a verified graph, never building anything silently.

Every runtime command takes an artifact as a zoo or artifact name (under ``--artifacts-dir``),
an artifact folder, or a ``.onnx`` file beside its manifest. :func:`resolve` finds it and
returns the graph's bytes, read under the artifact's lock and checked against the sha256
its manifest records. A missing or stale graph is either rebuilt with exactly the recorded
settings, with one line saying so, or (``rebuild=False``, or a user model whose code the
toolkit may not import) refused with the command that rebuilds it.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from exporter import artifact as art
from exporter.errors import UserError
from exporter.files import read_regular, sha256_bytes
from exporter.zoo import list_models


@dataclass
class Resolved:
    """A graph ready to run: its artifact, which graph, its verified bytes, and what was done to get it."""

    artifact: art.Artifact
    key: art.VariantKey
    graph: bytes
    notes: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.artifact.path(self.key)


def export_command(manifest: art.Manifest, directory: Path) -> str:
    """The ``python -m exporter`` command that makes this artifact again, in its folder ``directory``."""
    s, src = manifest.settings, manifest.source
    target = src.model if src.kind == "zoo" else (src.ref or "YOUR_FILE.py:Builder")
    parts = ["python -m exporter", shlex.quote(str(target)), f"--opset {s.opset}"]
    if src.kind != "zoo" or manifest.name != src.model:
        parts.append(f"--name {shlex.quote(manifest.name)}")
    if src.kind != "zoo" or s.input_shape != list(_zoo_shape(str(src.model))):
        parts.append("--input-shape " + "x".join(map(str, s.input_shape)))
    if s.weights:
        parts.append(f"--weights {shlex.quote(s.weights)}")
    elif s.seed:
        parts.append(f"--seed {s.seed}")
    if s.dynamic_size:
        parts.append("--dynamic-size")
    if not s.simplify:
        parts.append("--no-simplify")
    parts += _folder(directory, manifest.name)
    return " ".join(parts)


def _folder(directory: Path, name: str) -> list[str]:
    """How to point the exporter at ``directory``: by its parent where the folder carries the artifact's
    name, else by the folder itself (a renamed or copied artifact is rebuilt where it is)."""
    if Path(directory).name != name:
        return [f"--output {shlex.quote(str(directory))}"]
    return _output_dir(Path(directory).parent)


def _output_dir(artifacts_dir: Path) -> list[str]:
    if Path(artifacts_dir).resolve() == art.DEFAULT_ARTIFACTS_DIR.resolve():
        return []
    return [f"--artifacts-dir {shlex.quote(str(artifacts_dir))}"]


def _zoo_shape(name: str) -> tuple[int, ...]:
    from exporter.zoo import get_spec

    try:
        return get_spec(name).input_shape
    except UserError:
        return ()


def variant_command(manifest: art.Manifest, key: art.VariantKey, directory: Path) -> str:
    """The ``python -m exporter`` command that builds this variant of the artifact in ``directory``."""
    opt = f" --optimize-for {key.optimize_for}" if key.optimize_for else ""
    return f"{export_command(manifest, directory)} --precision {key.precision}{opt}"


def _rebuild_base(artifact: art.Artifact, reason: str, say: Callable[[str], None]) -> None:
    """Export the artifact again with exactly its recorded settings (zoo models only), into its own
    folder: the one the user named, whatever the manifest's name (a label, never a path)."""
    from exporter.export import export_model

    m, s = artifact.manifest, artifact.manifest.settings
    if m.source.kind != "zoo":
        raise UserError(
            f"{reason}, and {m.name} is your own model, whose code is only run when you name it: "
            f"re-export it: {export_command(m, artifact.directory)}"
        )
    if s.weights and not Path(s.weights).is_file():
        raise UserError(f"{reason}, and the weights it was exported with are gone: {s.weights}")
    how = f"weights {s.weights}" if s.weights else f"seed {s.seed}"
    say(f"{reason}: re-exporting {m.name} with its recorded settings (opset {s.opset}, {how})")
    result = export_model(
        str(m.source.model),
        opset=s.opset,
        directory=artifact.directory,
        weights=s.weights,
        simplify=s.simplify,
        input_shape=tuple(s.input_shape),
        seed=s.seed,
        name=m.name,
        dynamic_size=s.dynamic_size,
    )
    if result.manifest.sha256 != m.sha256:
        new = result.manifest.sha256
        say(f"note: the new graph differs from the recorded one (sha256 {m.sha256[:12]} -> {new[:12]})")


def _rebuild_variant(
    artifact: art.Artifact,
    key: art.VariantKey,
    reason: str,
    say: Callable[[str], None],
    reference: str | None,
) -> None:
    from exporter.reference import rebuild
    from exporter.variants import VariantOptions, build_variant

    record = artifact.variant(key)
    options = VariantOptions()
    if record is not None:
        q = record.quantization
        options = VariantOptions(
            calibration_dir=q.calibration_dir if q else None,
            calibration_method=q.calibration_method if q else "minmax",
            fp16_io=record.io_dtype == "float16",
            reduce_range=q.reduce_range if q else None,
        )
        if options.calibration_dir and not Path(options.calibration_dir).is_dir():
            raise UserError(f"{reason}, and its calibration folder is gone: {options.calibration_dir}")
        say(f"{reason}: rebuilding the {key} variant with its recorded settings")
    else:
        say(f"{reason}: building the {key} variant with the default settings")
    prepared = rebuild(artifact.manifest, reference)  # a user model needs the code named on the command line
    build_variant(artifact.directory, key, options=options, reference=prepared)


def resolve(
    ref: str,
    *,
    key: art.VariantKey | None = None,
    artifacts_dir: Path = art.DEFAULT_ARTIFACTS_DIR,
    rebuild: bool = True,
    reference: str | None = None,
    say: Callable[[str], None] = print,
) -> Resolved:
    """Find the artifact ``ref`` names and return the verified bytes of its ``key`` graph.

    ``key`` defaults to the graph a ``.onnx`` argument names, else fp32. With ``rebuild``
    a missing zoo artifact is exported with the defaults and a stale graph rebuilt with its
    recorded settings, each said in one line through ``say``; without it they are refused
    with the command to run. ``reference`` is the ``FILE.py:Builder`` the user named, needed to
    verify a rebuilt variant of their own model.
    """
    artifacts_dir = Path(artifacts_dir)
    if artifacts_dir.exists() and not artifacts_dir.is_dir():
        raise UserError(f"--artifacts-dir {artifacts_dir} is not a folder")
    loc = art.locate(ref, artifacts_dir)
    if loc.key is not None and key is not None and key != loc.key:
        raise UserError(f"{ref} is the {loc.key} graph of {loc.name}, not {key}")
    key = loc.key or key or art.BASE
    notes: list[str] = []

    def note(line: str) -> None:
        notes.append(line)
        say(line)

    if loc.zoo_default:
        if loc.name not in list_models():
            raise UserError(
                f"no artifact named {loc.name} in {artifacts_dir} (and it is not a zoo model; "
                "see python -m exporter --list)"
            )
        if not rebuild:
            command = " ".join(["python -m exporter", loc.name, *_output_dir(artifacts_dir)])
            raise UserError(f"no artifact for {loc.name} in {artifacts_dir}: export it: {command}")
        from exporter.export import export_model

        note(f"no artifact for {loc.name} in {artifacts_dir}: exporting it with the defaults first")
        export_model(loc.name, output_dir=artifacts_dir)

    for _attempt in range(3):
        with art.artifact_lock(loc.directory, on_wait=say, reading=True):
            artifact = art.open_artifact(loc.directory)
            base_stale = artifact.stale_reason()
            variant_stale = None if key.is_base or base_stale else artifact.stale_reason(key)
            if not base_stale and not variant_stale:
                graph = read_regular(artifact.path(key), limit=None)
                if sha256_bytes(graph) == (
                    artifact.manifest.sha256 if key.is_base else artifact.manifest.variants[str(key)].sha256
                ):
                    return Resolved(artifact, key, graph, notes)
                continue
        if base_stale:
            if not rebuild:
                raise UserError(f"{base_stale}: rebuild it: {export_command(artifact.manifest, artifact.directory)}")
            _rebuild_base(artifact, base_stale, note)
        else:
            assert variant_stale is not None
            if not rebuild:
                command = variant_command(artifact.manifest, key, artifact.directory)
                raise UserError(f"{variant_stale}: build it: {command}")
            _rebuild_variant(artifact, key, variant_stale, note, reference)
    raise UserError(f"{loc.directory} keeps changing while being read (another process is rewriting it): try again")
