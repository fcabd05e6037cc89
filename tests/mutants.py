"""Planted defects the fast suite must notice: a small mutation check, run on demand (not by pytest, not in CI).

Each mutant breaks one promise of README.md's "Can I trust this?" with a source patch (file, old text, new
text; the old text must occur exactly once). It is applied to a private copy of this checkout (tracked and
untracked files, nothing ignored), and the tests that should notice run there; the mutant is *killed* when
they fail. Every mutant must be killed: a survivor is a promise no test holds.

    python tests/mutants.py                 # every mutant against its own tests (about 20 min on 2 busy cores)
    python tests/mutants.py --only lock_never_taken export_ignores_parity
    python tests/mutants.py --fast-suite    # every mutant against the whole fast suite (hours)
    python tests/mutants.py --list          # the mutants, what each breaks and the tests that catch it
    python tests/mutants.py --baseline      # first run each mutant's tests unmutated: a kill counts only if they pass

Exit status 0 when every mutant was killed, 1 otherwise. It never touches this checkout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAST = "not slow and not serve and not browser and not gpu"


@dataclass(frozen=True)
class Mutant:
    name: str
    breaks: str  # the promise it breaks, in a user's words
    file: str
    edits: tuple[tuple[str, str], ...]  # (old, new), each old text exactly once in the file
    tests: tuple[str, ...]  # pytest arguments: the tests that must fail (node ids or files, -k allowed)


MUTANTS = [
    Mutant(
        "export_ignores_parity",
        "the exporter writes a graph although onnxruntime disagrees with PyTorch",
        "exporter/export.py",
        (
            (
                '    if not parity.passed:\n        raise ExportFailed(f"{prepared.name}: onnxruntime',
                '    if False:\n        raise ExportFailed(f"{prepared.name}: onnxruntime',
            ),
        ),
        ("tests/exporter/test_refusals.py",),
    ),
    Mutant(
        "weights_fingerprint_off",
        "a changed --weights file (or zoo code) goes unnoticed: neither its sha256 nor the weights' fingerprint "
        "is checked",
        "exporter/reference.py",
        (
            ('if w.kind == "file" and prepared.weights.sha256 != w.sha256:', "if False:"),
            ("    if prepared.weights.state_sha256 != w.state_sha256:\n        raise", "    if False:\n        raise"),
        ),
        ("tests/exporter/test_reference.py",),
    ),
    Mutant(
        "weights_file_sha_off",
        "a --weights file rewritten with the same tensors in other bytes goes unnoticed",
        "exporter/reference.py",
        (('if w.kind == "file" and prepared.weights.sha256 != w.sha256:', "if False:"),),
        ("tests/exporter/test_reference.py",),
    ),
    Mutant(
        "batchnorm_note_excuses_all",
        "the BatchNorm last-bit note excuses weights that really differ",
        "exporter/reference.py",
        (("        if prepared.weights.params_sha256 == w.params_sha256:\n", "        if True:\n"),),
        ("tests/exporter/test_reference.py",),
    ),
    Mutant(
        "every_comparison_passes",
        "every comparison passes, whatever the graph computes",
        "runtime/compare.py",
        (("        passed=not failures,", "        passed=True,"),),
        ("tests/runtime/test_compare.py", "tests/runtime/parity/test_parity.py"),
    ),
    Mutant(
        "partial_nan_passes",
        "a NaN in part of an output passes (only an output that is all NaN fails)",
        "runtime/compare.py",
        (("finite = bool(np.all(np.isfinite(got64)))", "finite = bool(np.any(np.isfinite(got64)))"),),
        ("tests/runtime/test_compare.py",),
    ),
    Mutant(
        "first_output_only",
        "only the first output of a graph is compared",
        "runtime/parity/checker.py",
        (("for name, r, o in zip(names, refs, outs):", "for name, r, o in list(zip(names, refs, outs))[:1]:"),),
        ("tests/runtime/parity/test_parity.py::test_every_output_is_compared_not_only_the_first",),
    ),
    Mutant(
        "tolerance_only_echoed",
        "--atol/--rtol are printed but the verdict still uses the defaults",
        "runtime/parity/checker.py",
        (
            (
                "results.append(compare(r.float().numpy(), o, tol, output=name, size=size))",
                "results.append(compare(r.float().numpy(), o, default_tolerance(info.device, precision, "
                "tf32=config.tf32) if tolerance is not None and verified_with is None else tol, output=name, "
                "size=size))",
            ),
        ),
        ("tests/runtime/parity/test_parity.py", "-k", "tolerance"),
    ),
    Mutant(
        "parity_cli_other_inputs",
        "python -m runtime.parity checks other inputs than the exporter did",
        "runtime/parity/__main__.py",
        (
            (
                "        inputs=args.inputs,\n        on_step=err.print if not args.json else None,",
                "        inputs=args.inputs,\n        seed=1,\n        on_step=err.print if not args.json else None,",
            ),
        ),
        ("tests/runtime/parity/test_parity.py::test_the_parity_cli_gives_the_exporters_verdict_and_figures",),
    ),
    Mutant(
        "fp16_variant_unverified",
        "an fp16 (or int8) variant is recorded although it failed its parity check",
        "exporter/variants.py",
        (
            (
                '        if not parity.passed:\n            raise ExportFailed(f"{artifact.name} {key} failed',
                '        if False:\n            raise ExportFailed(f"{artifact.name} {key} failed',
            ),
        ),
        ("tests/exporter/test_variants.py", "-k", "fails_its_check"),
    ),
    Mutant(
        "never_unstable",
        "no benchmark figure is ever flagged unstable",
        "runtime/bench/runner.py",
        (
            (
                "                unstable=bool(reasons),\n"
                "                unstable_reasons=reasons,\n                gflop=gflop,",
                "                unstable=False,\n                unstable_reasons=[],\n                gflop=gflop,",
            ),
        ),
        ("tests/runtime/bench/test_bench.py", "-k", "unstable or contended"),
    ),
    Mutant(
        "wide_interval_ignored",
        "a median whose 95% interval is wide is not flagged (only a contended one is)",
        "runtime/bench/runner.py",
        (
            (
                "            if width > config.max_ci_width:\n                own[c].append",
                "            if False:\n                own[c].append",
            ),
        ),
        ("tests/runtime/bench/test_bench.py", "-k", "unstable or contended"),
    ),
    Mutant(
        "fewer_rows_replace_results",
        "a benchmark run with fewer rows replaces the top-level results.json",
        "runtime/bench/store.py",
        (("            if doc.measured >= outcome.previous_measured:", "            if True:"),),
        ("tests/runtime/bench/test_bench.py::test_fewer_rows_never_replace_more",),
    ),
    Mutant(
        "rebuild_other_settings",
        "a stale graph is rebuilt silently with other settings (the default seed)",
        "runtime/resolve.py",
        (("        seed=s.seed,\n        name=m.name,", "        seed=0,\n        name=m.name,"),),
        ("tests/runtime/test_resolve.py", "-k", "recorded_settings"),
    ),
    Mutant(
        "rebuild_not_said",
        "a stale graph is rebuilt without a word",
        "runtime/resolve.py",
        (('    say(f"{reason}: re-exporting', '    (lambda _line: None)(f"{reason}: re-exporting'),),
        ("tests/runtime/test_resolve.py", "-k", "recorded_settings"),
    ),
    Mutant(
        "lock_never_taken",
        "the artifact's lock is never taken: two runs on one artifact interleave",
        "exporter/artifact.py",
        (
            ("            lock.acquire(timeout=0.5)\n", "            pass\n"),
            ("            lock.acquire()\n", "            pass\n"),
            ("        lock.release()\n", "        pass\n"),
        ),
        ("tests/exporter/test_artifact.py", "-k", "at_once or concurrent"),
    ),
    Mutant(
        "sigterm_not_handled",
        "SIGTERM kills an export where it stands (no clean-up: a temporary file is left)",
        "exporter/errors.py",
        (
            (
                "previous = signal.signal(signal.SIGTERM, _raise_terminated)",
                "previous = signal.getsignal(signal.SIGTERM)",
            ),
        ),
        ("tests/exporter/test_files.py", "-k", "signal"),
    ),
    Mutant(
        "interrupted_write_published",
        "a write interrupted half way publishes what it had written",
        "exporter/files.py",
        (
            (
                "        except BaseException:\n            writer.abort()",
                "        except BaseException:\n            writer.commit()",
            ),
        ),
        ("tests/exporter/test_files.py",),
    ),
    Mutant(
        "partials_kept",
        "the .partial files of a killed run are never removed",
        "exporter/files.py",
        (("    removed = []\n    if directory.is_dir():", "    removed = []\n    if False:"),),
        ("tests/exporter/test_files.py", "-k", "partial"),
    ),
    Mutant(
        "builder_called_twice",
        "a file.py:Builder is called twice (the second model, other weights, is the one exported)",
        "exporter/user_model.py",
        (
            (
                "        model = builder()  # type: ignore[operator]",
                "        builder()  # type: ignore[operator]\n        model = builder()  # type: ignore[operator]",
            ),
        ),
        ("tests/exporter/test_user_model.py",),
    ),
    Mutant(
        "modes_not_restored",
        "an nn.Module passed to the API comes back in eval mode",
        "exporter/user_model.py",
        (("            m.training = training  # not m.train()", "            pass  # not m.train()"),),
        ("tests/exporter/test_module_modes.py",),
    ),
    Mutant(
        "inputs_shared",
        "both sides of a comparison are fed the same tensor: a forward that changes its input spoils the other side",
        "exporter/reference.py",
        (("            out = model(x.clone())", "            out = model(x)"),),
        ("tests/runtime/test_parity_inplace.py",),
    ),
    Mutant(
        "batch_dims_unchecked",
        "an output without the batch as its first dimension is exported",
        "exporter/export.py",
        (("        _check_batch_dims(outputs, TRACE_BATCH)\n", "        pass\n"),),
        ("tests/exporter/test_batch_dimension.py",),
    ),
    Mutant(
        "trace_notes_dropped",
        "Python control flow the trace froze is not recorded in the manifest",
        "exporter/export.py",
        (("            trace_notes=traced.notes,", "            trace_notes=[],"),),
        ("tests/exporter/test_trace_notes.py",),
    ),
    Mutant(
        "cuda_fallback_silent",
        "--device cuda runs on the CPU without a word when the CUDA provider cannot be created",
        "runtime/sessions.py",
        (
            (
                '    if config.device == "cuda":\n        raise CudaUnavailable(',
                "    if False:\n        raise CudaUnavailable(",
            ),
        ),
        ("tests/runtime/test_sessions.py",),
    ),
    Mutant(
        "manifest_code_imported",
        "a runtime command imports the code a manifest's source.ref names",
        "exporter/reference.py",
        (
            (
                '    if builder is None and src.kind != "zoo":\n',
                '    if builder is None and src.kind != "zoo" and src.ref:\n        builder = src.ref\n'
                '    if builder is None and src.kind != "zoo":\n',
            ),
        ),
        ("tests/runtime/test_resolve.py", "-k", "import"),
    ),
]


def _copy_checkout(dest: Path) -> None:
    """The tracked and untracked (not ignored) files of this checkout, as they are on disk."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _apply(root: Path, mutant: Mutant) -> None:
    path = root / mutant.file
    text = path.read_text()
    for old, new in mutant.edits:
        count = text.count(old)
        if count != 1:
            raise SystemExit(
                f"mutant {mutant.name}: the text to replace occurs {count} times in {mutant.file}: {old!r}"
            )
        text = text.replace(old, new)
    path.write_text(text)


def _run_tests(root: Path, args: list[str], log: Path, timeout: float) -> tuple[int, float]:
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    env.pop("CNN_TOOLKIT_STRICT_SKIPS", None)
    started = time.monotonic()
    with open(log, "w") as out:
        try:
            code = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args],
                cwd=root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
    return code, time.monotonic() - started


def _baseline(chosen: list[Mutant], scratch: Path, args: argparse.Namespace) -> set[tuple[str, ...]]:
    """Run each distinct selection of tests on an unmutated copy; return those that fail (a kill means nothing)."""
    root = scratch / "unmutated"
    _copy_checkout(root)
    selections = [["-m", FAST, "tests"]] if args.fast_suite else list(dict.fromkeys(m.tests for m in chosen))
    broken: set[tuple[str, ...]] = set()
    for i, tests in enumerate(selections):
        code, seconds = _run_tests(root, list(tests), scratch / f"unmutated-{i}.log", args.timeout)
        ok = code == 0
        verdict = "pass" if ok else f"FAILS (pytest exit {code})"
        print(f"{'baseline':>9}  {verdict:<28} {seconds:6.0f} s  {' '.join(tests)}", flush=True)
        if not ok:
            broken.add(tuple(tests))
    if args.fast_suite and broken:
        raise SystemExit("the fast suite fails without any mutant: fix it first")
    shutil.rmtree(root, ignore_errors=True)
    return broken


def _first_failure(log: Path) -> str:
    """The first failing test of a pytest log (its short summary line), to see that it failed for the reason."""
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" ", 1)[1].split(" - ", 1)[0]
    return "(no FAILED line in the log)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
    p.add_argument("--fast-suite", action="store_true", help=f"run the whole fast suite (-m '{FAST}') per mutant")
    p.add_argument("--list", action="store_true", help="list the mutants and their tests")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per mutant's tests (default 1800)")
    p.add_argument("--keep", action="store_true", help="keep the scratch copies and logs")
    p.add_argument("--baseline", action="store_true", help="run each selection of tests unmutated first")
    args = p.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTANTS}
    if unknown:
        p.error(f"no mutant named {', '.join(sorted(unknown))}")
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.breaks}\n    {m.file}; caught by: {' '.join(m.tests)}")
        return 0

    scratch = Path(tempfile.mkdtemp(prefix="cnn-mutants."))
    results: list[tuple[Mutant, str, float]] = []
    try:
        broken = _baseline(chosen, scratch, args) if args.baseline else set()
        for m in chosen:
            if m.tests in broken and not args.fast_suite:
                results.append((m, "invalid: its tests fail unmutated", 0.0))
                print(f"{'invalid':>9}  {m.name:<28} its tests fail without the mutant", flush=True)
                continue
            root = scratch / m.name
            _copy_checkout(root)
            _apply(root, m)
            tests = ["-m", FAST, "tests"] if args.fast_suite else list(m.tests)
            code, seconds = _run_tests(root, tests, scratch / f"{m.name}.log", args.timeout)
            # 1: a test failed (killed); 0: all passed (survived); else the run itself broke (an error)
            verdict = {0: "SURVIVED", 1: "killed"}.get(code, f"error (pytest exit {code})")
            results.append((m, verdict, seconds))
            print(f"{verdict:>9}  {m.name:<28} {seconds:6.0f} s  {m.breaks}", flush=True)
            if verdict == "killed":
                print(f"{'':11}by {_first_failure(scratch / f'{m.name}.log')}", flush=True)
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"copies and logs kept in {scratch}")
    killed = [m for m, v, _ in results if v == "killed"]
    print(f"score: {len(killed)}/{len(results)} killed")
    survivors = [f"{m.name} ({v})" for m, v, _ in results if v != "killed"]
    if survivors:
        print("not killed: " + ", ".join(survivors))
    return 0 if len(killed) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
