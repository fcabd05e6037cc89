"""Where a profile is written: ``OUTPUT/NAME/<graph>.<engine>.<device>.b<batch>[.HxW]/`` holding
``profile.json`` (strict JSON, every layer and node) and ``layers.png``, both written atomically (a
failure leaves the earlier files of that folder as they were)."""

from __future__ import annotations

from pathlib import Path

from exporter.artifact import DEFAULT_ARTIFACTS_DIR, results_name
from exporter.files import atomic_outputs, ensure_writable_dir, remove_stale_partials

from .plot import layers_png
from .records import Profile

DEFAULT_OUTPUT = Path("artifacts") / "profile"


def profile_dir(output: Path, profile: Profile, artifacts_dir: Path = DEFAULT_ARTIFACTS_DIR) -> Path:
    """Named after the artifact's folder (the graph's), not its manifest's name, by
    :func:`exporter.artifact.results_name`: a renamed or copied artifact, or a folder of the same name
    elsewhere, never shares, and replaces, another's profiles."""
    size = "" if profile.input_shape is None else "." + "x".join(map(str, profile.input_shape[1:]))
    folder = results_name(Path(profile.file).parent, artifacts_dir)
    return output / folder / f"{profile.graph}.{profile.engine}.{profile.device}.b{profile.batch_size}{size}"


def write_profile(
    output: Path, profile: Profile, top: int | None = None, artifacts_dir: Path = DEFAULT_ARTIFACTS_DIR
) -> list[Path]:
    """Write the profile's files; return their paths."""
    ensure_writable_dir(output)
    directory = profile_dir(output, profile, artifacts_dir)
    if directory.is_dir():
        remove_stale_partials(directory)
    png = layers_png(profile, top)
    files = [directory / "profile.json", directory / "layers.png"]
    with atomic_outputs(directory) as writer:
        writer.write_text(files[0], profile.json_text())
        writer.write_bytes(files[1], png)
    return files
