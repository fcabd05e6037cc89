"""A Triton model repository on disk: one model written atomically, or every model checked.

Layout (Triton's onnxruntime backend)::

    DIR/
      NAME/
        config.pbtxt      # validated ModelConfig, text format
        1/
          model.onnx      # the artifact's graph, byte for byte (sha256 checked)

A model is staged complete in a hidden folder and renamed into place, so a server polling
the repository never sees half a model; the staging folder sits beside ``DIR`` where
possible (Triton would take a folder inside ``DIR`` for a model). Writing one model leaves
the others alone, so a repository is built up model by model; rewriting a model replaces
it whole. Writers of the same repository take turns (an advisory lock on ``DIR``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.errors import UserError, describe_os_error
from exporter.files import ensure_writable_dir, read_regular, read_regular_text, sha256_bytes

from .config import (
    CONFIG_FILE,
    MODEL_FILE,
    ConfigError,
    ModelOptions,
    build_config,
    graph_io,
    parse_config,
    validate_config,
)

VERSION = "1"
STAGING_SUFFIX = ".staging"


@dataclass
class WrittenModel:
    """One model written into a repository."""

    repository: Path
    name: str
    config_path: Path
    model_path: Path
    config_text: str
    sha256: str
    size_bytes: int
    replaced: bool
    models: list[str] = field(default_factory=list)  # every model the repository now holds


@dataclass
class CheckedModel:
    name: str
    versions: list[str]
    ok: bool
    problem: str | None = None


@contextlib.contextmanager
def repository_lock(directory: Path) -> Iterator[None]:
    """Hold an advisory lock on the repository folder itself (no lock file is left in it)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _staging_parent(directory: Path) -> Path:
    """Where to stage: beside the repository (same filesystem, writable), else inside it."""
    parent = directory.resolve().parent
    try:
        if os.stat(parent).st_dev == os.stat(directory).st_dev and os.access(parent, os.W_OK):
            return parent
    except OSError:
        pass
    return directory


def list_models(directory: Path) -> list[str]:
    """The models of a repository: its folders holding a config.pbtxt."""
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and (p / CONFIG_FILE).is_file())


def write_model(
    directory: Path,
    name: str,
    config_text: str,
    graph: bytes,
    *,
    expected_sha256: str | None = None,
) -> WrittenModel:
    """Write ``DIR/name/config.pbtxt`` and ``DIR/name/1/model.onnx``, all or nothing.

    ``config_text`` is parsed and validated against ``graph`` again here, so no caller can
    write a configuration the server would refuse. Ctrl-C, SIGTERM or a full disk leave the
    repository as it was.
    """
    if expected_sha256 is not None and sha256_bytes(graph) != expected_sha256:
        raise UserError(f"the graph for {name} changed while being written (sha256 differs): try again")
    config = parse_config(config_text, where=f"{name}/{CONFIG_FILE}")
    if config.name != name:
        raise ConfigError(f"{name}/{CONFIG_FILE}: name '{config.name}' must equal the model's folder name '{name}'")
    validate_config(config, graph_io(graph))
    ensure_writable_dir(directory)
    final = directory / name
    with repository_lock(directory):
        if final.exists() and not final.is_dir():
            raise UserError(f"cannot write model {name}: {final} exists and is not a folder")
        stage_root = _staging_parent(directory)
        try:
            stage = Path(tempfile.mkdtemp(prefix=f".{directory.name}.{name}.", suffix=STAGING_SUFFIX, dir=stage_root))
        except OSError as exc:
            raise UserError(describe_os_error(exc, f"cannot write in {stage_root}")) from exc
        old: Path | None = None
        keep_old = False
        try:
            os.chmod(stage, 0o777 & ~_umask())
            (stage / VERSION).mkdir()
            _write_synced(stage / VERSION / MODEL_FILE, graph)
            _write_synced(stage / CONFIG_FILE, config_text.encode())
            replaced = final.exists()
            if replaced:
                old = stage_root / f".{directory.name}.{name}.{os.getpid()}.old{STAGING_SUFFIX}"
                os.rename(final, old)
            try:
                os.rename(stage, final)
            except BaseException:
                if old is not None:
                    try:
                        os.rename(old, final)
                        old = None
                    except OSError:
                        keep_old = True  # never delete the only copy of the previous model
                raise
        except OSError as exc:
            where = f" (the previous version is in {old})" if keep_old else ""
            raise UserError(describe_os_error(exc, f"cannot write model {name} into {directory}") + where) from exc
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
            if old is not None and not keep_old:
                shutil.rmtree(old, ignore_errors=True)
        models = list_models(directory)
    return WrittenModel(
        repository=directory,
        name=name,
        config_path=final / CONFIG_FILE,
        model_path=final / VERSION / MODEL_FILE,
        config_text=config_text,
        sha256=sha256_bytes(graph),
        size_bytes=len(graph),
        replaced=replaced,
        models=models,
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o666 & ~_umask())


def check_repository(directory: Path, names: Sequence[str] = ()) -> list[CheckedModel]:
    """Validate every model of a repository (or ``names``) as the server would load it.

    Each model folder needs a ``config.pbtxt`` naming it and at least one numeric version
    folder with a ``model.onnx`` (or the configuration's ``default_model_filename``); each
    version's graph is checked against the configuration.
    """
    if not directory.is_dir():
        raise UserError(f"{directory} is not a folder")
    folders = [directory / n for n in names] if names else sorted(p for p in directory.iterdir() if p.is_dir())
    results = []
    for folder in folders:
        results.append(_check_model(folder))
    if not results:
        raise UserError(f"{directory} holds no model folders")
    return results


def _check_model(folder: Path) -> CheckedModel:
    name = folder.name
    if not folder.is_dir():
        return CheckedModel(name, [], False, f"{folder} is not a folder")
    if name.startswith(".") and name.endswith(STAGING_SUFFIX):
        return CheckedModel(name, [], False, "an unfinished write was left here (a killed writer): remove this folder")
    config_path = folder / CONFIG_FILE
    try:
        config = parse_config(read_regular_text(config_path), where=f"{name}/{CONFIG_FILE}")
    except FileNotFoundError:
        return CheckedModel(
            name, [], False, f"no {CONFIG_FILE} (this toolkit does not rely on auto-completed configurations)"
        )
    except (OSError, UnicodeDecodeError) as exc:
        return CheckedModel(name, [], False, f"cannot read {config_path}: {exc}")
    except ConfigError as exc:
        return CheckedModel(name, [], False, str(exc))
    if config.name != name:
        return CheckedModel(name, [], False, f"config name '{config.name}' differs from the folder name '{name}'")
    versions = sorted((p.name for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=int)
    if not versions:
        return CheckedModel(name, [], False, "no version folder (such as 1/)")
    file_name = config.default_model_filename or MODEL_FILE
    for version in versions:
        graph_path = folder / version / file_name
        try:
            graph = read_regular(graph_path, limit=None)  # a FIFO would block the check forever
        except FileNotFoundError:
            return CheckedModel(name, versions, False, f"version {version} has no {file_name}")
        except OSError as exc:
            return CheckedModel(name, versions, False, f"cannot read {graph_path}: {exc}")
        try:
            validate_config(config, graph_io(graph), where=f"{name} (version {version})")
        except ConfigError as exc:
            return CheckedModel(name, versions, False, str(exc))
    return CheckedModel(name, versions, True)


@dataclass
class ServableModel:
    """A repository's model as the local server runs it: its configuration, graph and settings."""

    name: str
    config: Any  # the parsed ModelConfig
    graph_path: Path
    graph: bytes
    options: ModelOptions
    warmup_shape: tuple[int, ...]
    config_text: str = ""


def read_repository_model(directory: Path, name: str | None = None) -> ServableModel:
    """One model of a repository, validated as the server would load it, with the settings to run it.

    ``name`` may be left out when the repository holds one model. A configuration the local server
    could not run the same way (a setting it would drop) is refused, naming the setting.
    """
    from .config import options_from_config, same_settings

    directory = Path(directory)
    checked = check_repository(directory, [name] if name else [])
    if name is None and len(checked) > 1:
        raise UserError(f"{directory} holds {len(checked)} models ({', '.join(c.name for c in checked)}): name one")
    model = checked[0]
    if not model.ok:
        raise ConfigError(model.problem or f"{model.name}: not a valid model")
    folder = directory / model.name
    text = read_regular_text(folder / CONFIG_FILE)
    config = parse_config(text, where=f"{model.name}/{CONFIG_FILE}")
    version = model.versions[-1]
    graph_path = folder / version / (config.default_model_filename or MODEL_FILE)
    graph = read_regular(graph_path, limit=None)
    options = options_from_config(config)
    io = graph_io(graph)
    shape = _sample_shape(config, io)
    rebuilt = build_config(model.name, io, options, warmup_shape=shape)
    dropped = same_settings(config, rebuilt)
    if dropped:
        raise ConfigError(f"{model.name}: the local server cannot run this configuration as written: {dropped[0]}")
    return ServableModel(model.name, config, graph_path, graph, options, shape, text)


def _sample_shape(config, io) -> tuple[int, ...]:  # type: ignore[no-untyped-def]
    """One sample's input shape: the declared dims where concrete, else the warm-up's."""
    dims = [int(d) for d in config.input[0].dims] if config.input else []
    batching = config.max_batch_size > 0
    if not batching and dims:
        dims = dims[1:]
    if dims and all(d > 0 for d in dims):
        return tuple(dims)
    for warm in config.model_warmup:
        data = warm.inputs.get(config.input[0].name)
        if data is not None:
            got = [int(d) for d in data.dims]
            return tuple(got if batching else got[1:])
    raise ConfigError(f"{config.name}: input dims {dims} are variable and no warm-up names a size to start with")
