"""Make an onnxruntime-gpu wheel small enough to carry to a machine with one kind of GPU.

The device machine of this workplace has no network, and what travels with a call is at most
64 MiB; onnxruntime-gpu's wheel is 255 MB, almost all of it the CUDA kernels inside
``libonnxruntime_providers_cuda.so`` (its ``.nv_fatbin`` section: one fat binary per compiled
CUDA file, each holding a cubin per GPU architecture). A GPU loads only the cubin of its own
architecture, so this tool

1. zeroes the payload of every cubin built for another architecture (``--keep-arch``, default 90:
   the H100 and H200), keeping every header as it is, so the CUDA driver still reads the same
   table and simply never selects those entries;
2. zeroes the fat binaries whose kept cubins hold nothing but the kernels of onnxruntime's LLM
   operators, which no CNN calls: ``onnxruntime::llm`` (mixture-of-experts, fpA_intB GEMMs),
   ``onnxruntime::flash`` (flash attention), CUTLASS (grouped GEMMs, memory-efficient attention)
   and DeepGEMM (fp8), found by reading every kernel name in them (``--keep-llm-kernels`` keeps
   them). These are only safe with CUDA's lazy module loading (``CUDA_MODULE_LOADING=LAZY``,
   CUDA's default since 12.2): a module is loaded when one of its kernels is first launched, and
   these never are (were one launched, it would fail loudly as an invalid kernel image);
3. writes the unpacked wheel (its RECORD updated) as one ``.tar.xz``, which zeroed regions make
   small. On the machine: ``tar -xJf ARCHIVE -C /tmp/site`` and ``PYTHONPATH=/tmp/site``.

Nothing else changes: the Python files, the other libraries and every byte outside the zeroed
payloads are the wheel's own. ``tools/gpu/session.sh`` checks the result on the GPU first (a CUDA
session whose outputs match the CPU's) before it measures anything.

    python tools/gpu/prune_onnxruntime.py onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl \\
        --output .gpu/onnxruntime-gpu-1.31.1-cp312-sm90.tar.xz
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
ELF_KIND = 2
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CUDA_PROVIDER = "onnxruntime/capi/libonnxruntime_providers_cuda.so"
#: Kernels of onnxruntime's LLM operators (MoE, fpA_intB and fp8 GEMMs, flash and memory-efficient
#: attention): never launched by a CNN. ``_ZN11onnxruntime3llm``: the mangled ``onnxruntime::llm::``.
LLM_KERNELS = re.compile(rb"_ZN11onnxruntime3llm|_ZN11onnxruntime5flash|cutlass|deep_gemm")
KERNEL_NAME = re.compile(rb"\.text\.(_Z[0-9A-Za-z_]+)")


@dataclass(frozen=True)
class Entry:
    offset: int  # of its header
    header_size: int
    size: int  # of its payload, padding included
    kind: int
    arch: int
    stored_size: int  # the payload's bytes before padding (compressed size where compressed)

    @property
    def payload(self) -> slice:
        return slice(self.offset + self.header_size, self.offset + self.header_size + self.size)


@dataclass(frozen=True)
class Fatbin:
    offset: int
    entries: list[Entry]


def fatbins(data: bytes | bytearray) -> Iterator[Fatbin]:
    """Every well-formed fat binary in ``data``: its header is version 1 of 16 bytes and its entries
    fill it exactly (anything else that happens to hold the magic number is passed over)."""
    magic = struct.pack("<I", FATBIN_MAGIC)
    pos = 0
    while (start := data.find(magic, pos)) >= 0:
        pos = start + 4
        if start + 16 > len(data):
            break
        _, version, header, fat_size = struct.unpack_from("<IHHQ", data, start)
        end = start + header + fat_size
        if version != 1 or header != 16 or end > len(data):
            continue
        entries, e = [], start + header
        while e + 32 <= end:
            kind, _, ehs, size = struct.unpack_from("<HHIQ", data, e)
            stored, _, _, _, arch = struct.unpack_from("<IIHHI", data, e + 16)
            if ehs < 32 or e + ehs + size > end:
                break
            entries.append(Entry(e, ehs, size, kind, arch, stored or size))
            e += ehs + size
        if e == end and entries:
            yield Fatbin(start, entries)
            pos = end


def _decompress_zstd(blob: bytes) -> bytes | None:
    try:
        import zstandard  # type: ignore[import-not-found]

        return zstandard.ZstdDecompressor().decompress(blob, max_output_size=256 << 20)
    except ImportError:
        pass
    except Exception:
        return None
    if shutil.which("zstd") is None:
        return None
    done = subprocess.run(["zstd", "-d", "-c", "-q"], input=blob, capture_output=True)
    return done.stdout if done.returncode == 0 else None


def kernel_names(
    data: bytes | bytearray, entry: Entry, decompress: Callable[[bytes], bytes | None]
) -> set[bytes] | None:
    """The kernels of a cubin entry (its ``.text.<name>`` sections), None where it cannot be read."""
    if entry.kind != ELF_KIND:
        return None
    start = entry.payload.start
    blob = bytes(data[start : start + entry.stored_size])
    if blob.startswith(ZSTD_MAGIC):
        raw = decompress(blob)
        if raw is None:
            return None
        blob = raw
    if not blob.startswith(b"\x7fELF"):
        return None
    return set(KERNEL_NAME.findall(blob))


@dataclass
class Report:
    fatbins: int = 0
    other_arch_entries: int = 0
    other_arch_bytes: int = 0
    llm_fatbins: int = 0
    llm_bytes: int = 0
    kept_entries: int = 0
    kept_bytes: int = 0
    llm_samples: list[str] = field(default_factory=list)
    unread: int = 0

    def lines(self) -> list[str]:
        mib = 1 << 20
        out = [
            f"{self.fatbins} fat binaries: kept {self.kept_entries} cubins ({self.kept_bytes / mib:.1f} MiB)",
            f"zeroed {self.other_arch_entries} cubins of other architectures ({self.other_arch_bytes / mib:.1f} MiB)",
            f"zeroed {self.llm_fatbins} fat binaries of LLM kernels only ({self.llm_bytes / mib:.1f} MiB), e.g. "
            + ", ".join(self.llm_samples[:2]),
        ]
        if self.unread:
            out.append(f"{self.unread} fat binaries could not be read (kept)")
        return out


def prune(
    data: bytearray,
    keep: tuple[int, ...] = (90,),
    drop_llm: bool = True,
    decompress: Callable[[bytes], bytes | None] = _decompress_zstd,
) -> Report:
    """Zero, in place, the cubins a GPU of architecture ``keep`` never loads (see the module docstring)."""
    report = Report()
    for fb in list(fatbins(data)):
        report.fatbins += 1
        kept = [e for e in fb.entries if e.arch in keep]
        for e in fb.entries:
            if e.arch not in keep:
                data[e.payload] = bytes(e.size)
                report.other_arch_entries += 1
                report.other_arch_bytes += e.size
        if drop_llm and kept:
            names = [kernel_names(data, e, decompress) for e in kept]
            if any(n is None for n in names):
                report.unread += 1
            elif all(n and all(LLM_KERNELS.search(k) for k in n) for n in names):
                for e in kept:
                    data[e.payload] = bytes(e.size)
                    report.llm_bytes += e.size
                report.llm_fatbins += 1
                sample = min(next(iter(n)) for n in names if n)  # type: ignore[type-var]
                report.llm_samples.append(sample[:60].decode(errors="replace"))
                continue
        report.kept_entries += len(kept)
        report.kept_bytes += sum(e.size for e in kept)
    return report


def _record_line(name: str, content: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(content)}"


def prune_wheel(wheel: Path, output: Path, keep: tuple[int, ...] = (90,), drop_llm: bool = True) -> Report:
    """The wheel's files, the CUDA provider pruned, as a ``.tar.xz`` at ``output`` (written atomically)."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        if CUDA_PROVIDER not in names:
            raise SystemExit(f"{wheel} holds no {CUDA_PROVIDER}: not an onnxruntime-gpu wheel")
        files = {n: zf.read(n) for n in names if not n.endswith("/")}
    library = bytearray(files[CUDA_PROVIDER])
    report = prune(library, keep, drop_llm)
    files[CUDA_PROVIDER] = bytes(library)
    record = next(n for n in files if n.endswith(".dist-info/RECORD"))
    lines = []
    for line in files[record].decode().splitlines():
        name = line.split(",", 1)[0]
        lines.append(_record_line(name, files[CUDA_PROVIDER]) if name == CUDA_PROVIDER else line)
    files[record] = ("\n".join(lines) + "\n").encode()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        tar_path = Path(tmp) / "pruned.tar"
        with tarfile.open(tar_path, "w") as tar:
            for name, content in sorted(files.items()):
                info = tarfile.TarInfo(name)
                info.size = len(content)
                info.mode = 0o755 if name.endswith(".so") or ".so." in name else 0o644
                tar.addfile(info, io.BytesIO(content))
        xz = Path(tmp) / "pruned.tar.xz"
        if shutil.which("xz"):
            subprocess.run(["xz", "-9", "-T0", "-c", str(tar_path)], stdout=xz.open("wb"), check=True)
        else:
            import lzma

            xz.write_bytes(lzma.compress(tar_path.read_bytes(), preset=9))
        xz.replace(output)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("wheel", type=Path, help="an onnxruntime-gpu wheel (for the Python of the GPU machine)")
    p.add_argument("--output", type=Path, required=True, help="the .tar.xz to write")
    p.add_argument("--keep-arch", type=int, action="append", help="SM architecture to keep (default 90)")
    p.add_argument("--keep-llm-kernels", action="store_true", help="do not zero the LLM-only fat binaries")
    args = p.parse_args(argv)
    report = prune_wheel(args.wheel, args.output, tuple(args.keep_arch or [90]), not args.keep_llm_kernels)
    for line in report.lines():
        print(line)
    print(f"wrote {args.output} ({args.output.stat().st_size / (1 << 20):.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
