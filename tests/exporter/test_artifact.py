"""The artifact contract: typed manifest, variant keys, validation on read, strict JSON, locking."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exporter import artifact as art
from exporter.errors import UserError
from tests.helpers import ROOT, assert_one_line, assert_one_line_err, run_cli, strict_loads


@pytest.mark.parametrize(
    "text, precision, target, file",
    [
        ("fp32", "fp32", None, "m.onnx"),
        ("fp16", "fp16", None, "m.fp16.onnx"),
        ("int8", "int8", None, "m.int8.onnx"),
        ("int8.opt-cpu", "int8", "cpu", "m.int8.opt-cpu.onnx"),
        ("fp32.opt-cuda", "fp32", "cuda", "m.opt-cuda.onnx"),
    ],
)
def test_variant_key_parses_prints_and_names_its_file(text: str, precision: str, target, file: str) -> None:
    key = art.VariantKey.parse(text)
    assert (key.precision, key.optimize_for) == (precision, target)
    assert str(key) == text and art.VariantKey.parse(str(key)) == key
    assert key.file_name("m") == file
    assert key.is_base == (text == "fp32")


@pytest.mark.parametrize("text", ["fp64", "int8.opt-", "int8.opt-tpu", "int8.fp16", ""])
def test_bad_variant_keys_are_one_clear_error(text: str) -> None:
    with pytest.raises(UserError):
        art.VariantKey.parse(text)


def test_manifest_round_trips_and_is_strict_json(lenet_dir: Path) -> None:
    text = (lenet_dir / "manifest.json").read_text()
    doc = strict_loads(text)
    assert doc["schema_version"] == art.SCHEMA_VERSION  # type: ignore[index]
    manifest = art.parse_manifest(text, lenet_dir / "manifest.json")
    assert manifest.model_dump(mode="json") == doc
    assert manifest.input_shape == (3, 32, 32) and manifest.weights.kind == "random"
    assert manifest.weights.batchnorm_calibrated is False  # lenet5 has no BatchNorm


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda d: d.update(sha256=5), "sha256"),
        (lambda d: d["settings"].update(opset="seventeen"), "settings.opset"),
        (lambda d: d["weights"].update(kind="stolen"), "weights.kind"),
        (lambda d: d.pop("inputs"), "inputs"),
        (lambda d: d.update(surprise=1), "surprise"),
    ],
)
def test_a_bad_manifest_is_one_error_naming_the_field(lenet_dir: Path, edit, field: str) -> None:
    path = lenet_dir / "manifest.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(art.ArtifactError, match=f"field '{field}'"):
        art.open_artifact(lenet_dir)
    proc = run_cli("runtime.parity", str(lenet_dir))
    assert_one_line(proc, f"field '{field}'", code=2)


def test_old_schema_and_broken_json_are_refused_clearly(lenet_dir: Path) -> None:
    path = lenet_dir / "manifest.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "schema_version": 1}))
    with pytest.raises(art.ArtifactError, match="schema version 1"):
        art.open_artifact(lenet_dir)
    path.write_text("{not json")
    with pytest.raises(art.ArtifactError, match="not valid JSON"):
        art.open_artifact(lenet_dir)


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda text: '{\n  "schema_version": ', "is not valid JSON (line 2, column 21: Expecting value)"),
        (lambda text: "[1, 2]", "does not hold a manifest (a JSON object)"),
        (lambda text: text.replace(f'"schema_version": {art.SCHEMA_VERSION}', '"schema_version": 1'), "has schema v"),
        (lambda text: text.replace('"opset": 17', '"opset": "x"'), "is not a valid manifest: field 'settings.opset'"),
        (lambda text: b"\xff\xfe", "is not UTF-8 text (invalid start byte at byte 0)"),
    ],
)
def test_every_damaged_manifest_says_how_to_mend_it_in_the_same_words(lenet_dir: Path, damage, problem: str) -> None:
    """Defect: a truncated manifest.json said only "not valid JSON (Expecting value: ...)", with no way out,
    while other damage said "remove it and export the model again": one remedy, worded once, for every reader."""
    path = lenet_dir / "manifest.json"
    damaged = damage(path.read_text())
    assert damaged != path.read_text()
    path.write_bytes(damaged) if isinstance(damaged, bytes) else path.write_text(damaged)
    with pytest.raises(art.DamagedManifest) as caught:
        art.open_artifact(lenet_dir)
    remedy = f"remove it and export the model again: python -m exporter MODEL --output {lenet_dir} (MODEL: the zoo"
    assert str(caught.value).startswith(f"{path} {problem}") and remedy in str(caught.value), str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "command", [["runtime.parity", "lenet5"], ["runtime.parity", "DIR"], ["runtime.bench", "--models", "lenet5"]]
)
def test_parity_and_bench_on_a_truncated_manifest_say_how_to_mend_it(lenet_dir: Path, command: list[str]) -> None:
    """Defect: parity and bench on a manifest.json truncated half way said only that it was not valid JSON."""
    path = lenet_dir / "manifest.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    args = [str(lenet_dir) if a == "DIR" else a for a in command]
    if "DIR" not in command:
        args += ["--artifacts-dir", str(lenet_dir.parent)]
    if command[0] == "runtime.bench":
        args += ["--output", str(lenet_dir.parent.parent / "bench")]
    proc = run_cli(*args)
    with pytest.raises(json.JSONDecodeError) as broken:
        json.loads(path.read_text())
    said = (
        f"error: {path} is not valid JSON (line {broken.value.lineno}, column {broken.value.colno}: {broken.value.msg})"
    )
    assert_one_line(proc, said, code=2)
    assert f": remove it and export the model again: python -m exporter MODEL --output {lenet_dir} " in proc.stderr
    assert not (lenet_dir.parent.parent / "bench").exists()


def test_non_finite_numbers_are_never_written(lenet_dir: Path) -> None:
    manifest = art.open_artifact(lenet_dir).manifest
    with pytest.raises(ValueError):
        manifest.parity.tolerance.model_validate({**manifest.parity.tolerance.model_dump(), "atol": float("inf")})


def test_int8_manifest_is_strict_json(lenet_dir: Path) -> None:
    """Defect: int8 manifests held ``Infinity`` (an unbounded atol)."""
    from exporter.variants import build_variant

    build_variant(lenet_dir, art.VariantKey("int8"))
    doc = strict_loads((lenet_dir / "manifest.json").read_text())
    assert doc["variants"]["int8"]["parity"]["tolerance"]["atol"] is None  # type: ignore[index]


@pytest.mark.parametrize("ref", ["lenet5", "DIR", "DIR/lenet5.onnx"])
def test_locate_takes_a_name_a_folder_or_a_graph(lenet_dir: Path, ref: str) -> None:
    loc = art.locate(ref.replace("DIR", str(lenet_dir)), lenet_dir.parent)
    assert loc.directory == lenet_dir and loc.name == "lenet5" and not loc.zoo_default
    assert loc.key == (art.BASE if ref.endswith(".onnx") else None)


def test_locate_refuses_a_graph_without_manifest(tmp_path: Path) -> None:
    (tmp_path / "x.onnx").write_bytes(b"")
    with pytest.raises(art.ArtifactError, match="no manifest.json beside it"):
        art.locate(str(tmp_path / "x.onnx"))


def test_locate_says_a_missing_graph_does_not_exist(tmp_path: Path) -> None:
    """Defect: a mistyped path was reported as having no manifest beside it."""
    with pytest.raises(art.ArtifactError, match=r"missing\.onnx does not exist$"):
        art.locate(str(tmp_path / "missing.onnx"))


def test_locate_says_a_missing_folder_does_not_exist(tmp_path: Path) -> None:
    """Defect (hostile pass): a mistyped folder was reported as having no manifest.json in it."""
    with pytest.raises(art.ArtifactError, match=r"nonexist does not exist$"):
        art.locate(str(tmp_path / "nonexist"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(art.ArtifactError, match=r"empty is not an artifact folder \(no manifest.json in it\)"):
        art.locate(str(tmp_path / "empty"))


@pytest.mark.parametrize("name", ["../x", "/abs/x", "a/b", "..", ".hidden", "", "a\\b"])
def test_names_that_leave_the_folder_are_refused(name: str) -> None:
    with pytest.raises(UserError, match="bad artifact name"):
        art.validate_name(name)


WAITING = "waiting for another process working on"


def _run_at_once(directory: Path, tmp_path: Path, *commands: list[str]) -> list[str]:
    """Start every ``python -m exporter`` command while this test holds the artifact's lock, so that they
    overlap for certain: each must say that it waits. Then let them go and return their stderr."""
    procs = []
    with art.artifact_lock(directory):
        for i, args in enumerate(commands):
            with open(tmp_path / f"err{i}", "w") as err:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "exporter", *args, "--artifacts-dir", str(directory.parent)],
                        cwd=ROOT,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                        text=True,
                    )
                )
        deadline = time.monotonic() + 240
        waiting = [False] * len(procs)
        while not all(waiting) and time.monotonic() < deadline:
            waiting = [WAITING in (tmp_path / f"err{i}").read_text() for i in range(len(procs))]
            if all(p.poll() is not None for p in procs):
                break
            time.sleep(0.2)
        assert all(waiting), [(tmp_path / f"err{i}").read_text() for i in range(len(procs))]
        assert all(p.poll() is None for p in procs), "a run went past the held lock"
    for p in procs:
        p.wait(timeout=300)
    errs = [(tmp_path / f"err{i}").read_text() for i in range(len(procs))]
    assert [p.returncode for p in procs] == [0] * len(procs), errs
    return errs


def test_concurrent_variant_builds_both_land(lenet_dir: Path, tmp_path: Path) -> None:
    """Defect: int8 and fp16 built at once both succeeded and the manifest listed one."""
    _run_at_once(lenet_dir, tmp_path, ["lenet5", "--precision", "int8"], ["lenet5", "--precision", "fp16"])
    artifact = art.open_artifact(lenet_dir)
    assert set(artifact.manifest.variants) == {"int8", "fp16"}
    for key in ("int8", "fp16"):
        assert artifact.stale_reason(art.VariantKey(key)) is None


def test_variant_and_reexport_at_once_leave_a_consistent_artifact(lenet_dir: Path, tmp_path: Path) -> None:
    """Defect: a variant build racing a re-export with another seed left a graph its manifest did not match."""
    _run_at_once(lenet_dir, tmp_path, ["lenet5", "--precision", "int8"], ["lenet5", "--seed", "9"])
    artifact = art.open_artifact(lenet_dir)
    assert artifact.stale_reason() is None, "graph and manifest must agree"
    assert artifact.manifest.settings.seed == 9
    record = artifact.manifest.variants["int8"]
    # Either the variant was built from the new graph, or it is reported stale: never silently wrong.
    stale = artifact.stale_reason(art.VariantKey("int8"))
    assert (record.base_sha256 == artifact.manifest.sha256) == (stale is None)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(name="/tmp/outside"), "bad artifact name"),
        (lambda d: d.update(name="../other"), "bad artifact name"),
        (lambda d: d.update(file="../../x/x.onnx"), "file must be 'lenet5.onnx'"),
        (lambda d: d["source"].update(model="evil.py:Net"), "a zoo source names a zoo model"),
        (lambda d: d["settings"].update(input_shape=[-3, 32, 32]), "settings.input_shape"),
        (lambda d: d.update(min_size=[0, 5]), "min_size"),
    ],
)
def test_hostile_manifests_cannot_point_outside_or_import(lenet_dir: Path, edit, message: str) -> None:
    """A hand-edited manifest could name a graph outside its folder, a variant path outside it,
    or a zoo 'model' that is really a file to import."""
    path = lenet_dir / "manifest.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(art.ArtifactError, match=message):
        art.open_artifact(lenet_dir)


def test_variant_records_must_name_their_own_file(lenet_dir: Path) -> None:
    from exporter.variants import build_variant

    build_variant(lenet_dir, art.VariantKey("fp16"))
    path = lenet_dir / "manifest.json"
    doc = json.loads(path.read_text())
    doc["variants"]["fp16"]["file"] = "../../etc/passwd"
    path.write_text(json.dumps(doc))
    with pytest.raises(art.ArtifactError, match="variant 'fp16' must be recorded as file 'lenet5.fp16.onnx'"):
        art.open_artifact(lenet_dir)


def test_deeply_nested_json_is_one_error(lenet_dir: Path) -> None:
    (lenet_dir / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(art.ArtifactError, match="not valid JSON"):
        art.open_artifact(lenet_dir)


@pytest.mark.parametrize("name", ["a" * 200, "x.onnx"])
def test_overlong_and_onnx_names_are_refused(name: str) -> None:
    with pytest.raises(UserError, match="bad artifact name"):
        art.validate_name(name)


def test_lock_follows_symlinks_to_the_real_folder(lenet_dir: Path, tmp_path: Path, monkeypatch) -> None:
    link = tmp_path / "link"
    link.symlink_to(lenet_dir)
    seen: list[str] = []
    real_lock = art.FileLock

    def spy(path: str, *a, **k):  # type: ignore[no-untyped-def]
        seen.append(path)
        return real_lock(path, *a, **k)

    monkeypatch.setattr(art, "FileLock", spy)
    for directory in (lenet_dir, link):
        with art.artifact_lock(directory):
            pass
    assert seen[0] == seen[1] == str(lenet_dir.resolve().parent / ".lenet5.lock")


def test_a_read_only_folder_can_still_be_read(lenet_dir: Path, monkeypatch) -> None:
    """Reading a current artifact in a read-only folder needs no lock file (nobody can write there)."""
    import errno

    from runtime.resolve import resolve

    def refuse(*_a, **_k):  # type: ignore[no-untyped-def]
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(art, "FileLock", refuse)
    assert resolve(str(lenet_dir), rebuild=False).graph
    with pytest.raises(UserError, match="cannot lock"):
        with art.artifact_lock(lenet_dir):
            pass


@pytest.mark.parametrize("kind", ["a folder", "not a regular file"])
def test_parity_on_an_artifact_whose_lock_is_a_folder_says_so(kind: str, lenet_dir: Path, capsys) -> None:
    """Defect: parity, which only reads, said "cannot lock ... for writing: Is a directory"."""
    import os

    from runtime.parity.__main__ import main as parity_main

    lock = lenet_dir.parent / ".lenet5.lock"
    lock.mkdir() if kind == "a folder" else os.mkfifo(lock)
    code = parity_main([str(lenet_dir), "--no-rebuild"])
    err = capsys.readouterr().err
    assert_one_line_err(code, err, f"cannot lock {lenet_dir} to read it: its lock file ", code=2)
    assert f"is {kind}: remove it" in err and "for writing" not in err
