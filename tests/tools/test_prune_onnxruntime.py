"""The onnxruntime-gpu pruner (tools/gpu): on synthetic fat binaries, it zeroes exactly the cubins a GPU of
the kept architecture never loads, keeps every header and every byte outside those payloads."""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
from pathlib import Path

from tools.gpu.prune_onnxruntime import CUDA_PROVIDER, ZSTD_MAGIC, fatbins, prune, prune_wheel


def _cubin(*kernels: str) -> bytes:
    return b"\x7fELF" + b"".join(b"\0.text." + k.encode() for k in kernels) + b"\0" * 8


def _entry(arch: int, payload: bytes, pad: int = 8) -> bytes:
    size = len(payload) + pad
    header = struct.pack("<HHIQIIHHI", 2, 0x101, 64, size, len(payload), 0, 8, 1, arch)
    header += b"\0" * (64 - len(header))
    return header + payload + b"\0" * pad


def _fatbin(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


CORE = _cubin("_ZN11onnxruntime4cuda13_BinaryElementWiseEv")
LLM = _cubin("_ZN11onnxruntime3llm7kernels15cutlass_kernels3moeEv", "_ZN11onnxruntime5flash16flash_fwd_kernelEv")


def _library() -> bytearray:
    junk = struct.pack("<IHHQ", 0xBA55ED50, 7, 99, 5)  # the magic number in data that is not a fat binary
    return bytearray(
        b"host code" + junk
        + _fatbin(_entry(80, CORE), _entry(90, CORE), _entry(120, CORE))
        + b"more host code"
        + _fatbin(_entry(90, LLM))
        + _fatbin(_entry(86, LLM), _entry(90, LLM))
        + b"tail"
    )  # fmt: skip


def test_other_architectures_and_llm_kernels_are_zeroed() -> None:
    data = _library()
    before = bytes(data)
    found = list(fatbins(data))
    assert [[e.arch for e in f.entries] for f in found] == [[80, 90, 120], [90], [86, 90]]
    report = prune(data)
    assert len(data) == len(before)
    assert (report.fatbins, report.other_arch_entries, report.llm_fatbins, report.kept_entries) == (3, 3, 2, 1)
    core = found[0].entries
    assert data[core[1].payload] == before[core[1].payload], "the sm_90 cubin of a core kernel stays"
    assert not any(data[core[0].payload]) and not any(data[core[2].payload])
    for f in found[1:]:
        assert all(not any(data[e.payload]) for e in f.entries)
    # every header, and everything outside the zeroed payloads, is unchanged
    zeroed = [e.payload for f in found for e in f.entries if not any(data[e.payload])]
    mask = bytearray(before)
    for s in zeroed:
        mask[s] = bytes(s.stop - s.start)
    assert bytes(data) == bytes(mask)


def test_llm_kernels_can_be_kept() -> None:
    data = _library()
    report = prune(data, drop_llm=False)
    assert report.llm_fatbins == 0 and report.kept_entries == 3


def test_a_compressed_cubin_is_read_through_the_decompressor() -> None:
    packed = ZSTD_MAGIC + b"opaque"
    data = bytearray(_fatbin(_entry(90, packed)))
    assert prune(bytearray(data), decompress=lambda blob: LLM).llm_fatbins == 1
    assert prune(bytearray(data), decompress=lambda blob: CORE).kept_entries == 1
    unreadable = prune(bytearray(data), decompress=lambda blob: None)
    assert unreadable.unread == 1 and unreadable.kept_entries == 1, "what cannot be read is kept"


def test_a_wheel_becomes_an_archive_with_its_record_updated(tmp_path: Path) -> None:
    wheel = tmp_path / "onnxruntime_gpu-0.0-cp312-cp312-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(CUDA_PROVIDER, bytes(_library()))
        zf.writestr("onnxruntime/__init__.py", "x = 1\n")
        zf.writestr(
            "onnxruntime_gpu-0.0.dist-info/RECORD", f"{CUDA_PROVIDER},sha256=old,1\nonnxruntime/__init__.py,,\n"
        )
    out = tmp_path / "ort.tar.xz"
    report = prune_wheel(wheel, out)
    assert report.llm_fatbins == 2
    with tarfile.open(out) as tar:
        names = tar.getnames()
        library = tar.extractfile(CUDA_PROVIDER).read()  # type: ignore[union-attr]
        record = tar.extractfile("onnxruntime_gpu-0.0.dist-info/RECORD").read().decode()  # type: ignore[union-attr]
    assert sorted(names) == sorted([CUDA_PROVIDER, "onnxruntime/__init__.py", "onnxruntime_gpu-0.0.dist-info/RECORD"])
    assert len(library) == len(_library()) and library != bytes(_library())
    line = next(x for x in record.splitlines() if x.startswith(CUDA_PROVIDER))
    assert (
        "sha256=old" not in record and line.startswith(f"{CUDA_PROVIDER},sha256=") and line.endswith(f",{len(library)}")
    )
    assert io.BytesIO(library).read(9) == b"host code"
