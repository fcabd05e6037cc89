"""``python -m runtime.bench``: results that are never lost, every artifact, one line per problem."""

from __future__ import annotations

import csv
import io
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from exporter.console import Console
from exporter.export import export_model
from runtime.bench import engines, report, runner
from runtime.bench.__main__ import main
from runtime.bench.rows import CSV_COLUMNS, RunDocument
from tests.helpers import ROOT, cuda_ready, strict_load, write_user_model

from .conftest import QUICK


def bench(
    arts: Path,
    out: Path,
    *extra: str,
    models: tuple[str, ...] = ("lenet5", "resnet_cifar"),
    quick: tuple[str, ...] = tuple(QUICK),
) -> int:
    return main(
        [
            "--models",
            *models,
            "--batch-size",
            "1",
            "3",
            *quick,
            *extra,
            "--output",
            str(out),
            "--artifacts-dir",
            str(arts),
        ]
    )


def test_bench_writes_strict_json_csv_and_plot(
    arts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "bench"
    monkeypatch.delenv("COLUMNS", raising=False)
    # the roofline included: QUICK without --no-roofline
    code = bench(arts, out, quick=tuple(q for q in QUICK if q != "--no-roofline"))
    assert code == 0
    printed = capsys.readouterr()
    # without a terminal: a Markdown table that fits 100 characters (it had 21 columns, ~330), nothing cut,
    # saying which columns it left out; and plain progress lines
    table = [line for line in printed.out.splitlines() if line.startswith("|")]
    assert "| model " in table[0] and " vs pytorch |" in table[0] and "…" not in printed.out
    assert max(map(len, table)) <= 100, table[0]
    lines = printed.out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("columns left out to fit 100"))
    end = next(i for i in range(start, len(lines)) if lines[i].endswith("(--wide shows them)"))
    left_out = " ".join(lines[start : end + 1])  # wrapped to the width like every line
    assert "x floor" in left_out and max(len(line) for line in lines[start : end + 1]) <= 100
    assert "fp32 peak" in printed.out and "CPU features: AVX-512" in printed.out
    assert "running on CPU" in printed.err
    assert "[1/4" in printed.err and "[4/4" in printed.err and "lenet5 batch 1: onnxruntime fp32" in printed.err

    doc = strict_load(out / "results.json")
    env = doc["environment"]
    for key in ("cpu_model", "cpu_cores", "gpu_name", "torch", "onnxruntime", "onnx", "providers", "threads"):
        assert key in env
    assert doc["device"] == "cpu" and doc["status"] == "complete"
    peak = doc["machine"]
    assert peak["matmul_gflops"] > 1 and peak["bandwidth_gbs"] > 0.1 and peak["threads"] == 1
    assert len(peak["matmul_gflops_probes"]) == 2 and peak["matmul_gflops"] == max(peak["matmul_gflops_probes"])
    rows = doc["rows"]
    assert len(rows) == 2 * 2 * 2
    for r in rows:
        assert r["status"] == "ok" and r["samples"] >= 3
        assert (r["p99_ms"] is None) == (r["samples"] < 100)  # p99 needs 100 samples
        assert r["median_ci_low_ms"] <= r["median_ms"] <= r["median_ci_high_ms"]
        assert 0 < r["min_ms"] <= r["median_ms"]
        assert r["throughput_ips"] == pytest.approx(r["batch_size"] / r["median_ms"] * 1e3)
        assert r["input_shape"] == [3, 32, 32] and r["threads"] == 1
        # roofline: both models' weights fit in any last-level cache, so the floor is FLOPs at the peak
        assert r["gflop"] > 0
        if peak["cache_bytes"]:  # known wherever sysfs describes the caches
            assert r["bound"] == "compute (weights in cache)"
            assert r["floor_ms"] == pytest.approx(r["gflop"] / peak["matmul_gflops"] * 1e3)
        assert r["time_over_floor"] == pytest.approx(r["median_ms"] / r["floor_ms"])
        assert r["achieved_gflops"] == pytest.approx(r["gflop"] / (r["median_ms"] / 1e3))
        assert r["fraction_of_peak"] == pytest.approx(r["achieved_gflops"] / peak["matmul_gflops"])
        assert r["unstable"] == bool(r["unstable_reasons"])
    for r in rows:
        if r["engine"] == "onnxruntime":
            pt = next(
                p
                for p in rows
                if p["engine"] == "pytorch" and (p["model"], p["batch_size"]) == (r["model"], r["batch_size"])
            )
            assert r["vs_pytorch"] == pytest.approx(pt["median_ms"] / r["median_ms"])
            assert r["vs_pytorch_ci_low"] <= r["vs_pytorch"] <= r["vs_pytorch_ci_high"]
            assert r["parity"] == "pass" and r["settings"]["allow_spinning"] is False
        group = [p for p in rows if (p["model"], p["batch_size"]) == (r["model"], r["batch_size"])]
        assert r["vs_best"] == pytest.approx(r["median_ms"] / min(p["median_ms"] for p in group))

    with open(out / "results.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        csv_rows = list(reader)
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS and len(csv_rows) == len(rows)
    assert csv_rows[0]["input_shape"] == "3x32x32"
    # --wide: every column of the same run
    cols, cells = report.table(RunDocument.model_validate(doc))
    wide = io.StringIO()
    assert Console(wide).table(cols, cells, wide=True) == []
    assert " x floor |" in wide.getvalue() and " p90 ms |" in wide.getvalue()

    png = (out / "latency.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    img = np.asarray(Image.open(out / "latency.png").convert("L"))
    assert img.shape[0] > 200 and img.std() > 10, "plot is blank"
    run_dirs = list((out / "runs").iterdir())
    assert len(run_dirs) == 1 and (run_dirs[0] / "results.json").read_bytes() == (out / "results.json").read_bytes()


def test_ctrl_c_before_the_first_measurement_keeps_earlier_results(
    arts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench"
    assert bench(arts, out, models=("lenet5",)) == 0
    before = {name: (out / name).read_bytes() for name in ("results.json", "results.csv", "latency.png")}

    def interrupt(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "measure_interleaved", interrupt)
    capsys.readouterr()
    assert bench(arts, out, models=("lenet5",)) == 130
    err = capsys.readouterr().err
    assert "interrupted (SIGINT): nothing was measured" in err and "Traceback" not in err
    assert {name: (out / name).read_bytes() for name in before} == before
    assert len(list((out / "runs").iterdir())) == 1  # the interrupted run wrote nothing


def _wait_for(proc: subprocess.Popen, text: str, timeout: float) -> str:
    """Read the process's stderr until a line contains ``text``; return what was read."""
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
            if text in line:
                return seen
    raise AssertionError(f"never saw {text!r}; stderr so far:\n{seen}")


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_run_keeps_the_rows_measured(arts: Path, tmp_path: Path, sig: signal.Signals, code: int) -> None:
    out = tmp_path / "bench"
    args = ["--models", "lenet5", "--batch-size", "1", "2", "3", "4", "5", "6", "7", "8", *QUICK]
    args += ["--min-seconds", "2", "--output", str(out), "--artifacts-dir", str(arts)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.bench", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: a test run started in the background (`pytest &`) inherits SIGINT
        # ignored, and Python then never turns Ctrl-C into KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        seen = _wait_for(proc, "lenet5 batch 1: onnxruntime fp32", timeout=120)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = seen + stderr
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    run_dir = next((out / "runs").iterdir())
    doc = strict_load(run_dir / "results.json")
    kept = len(doc["rows"])
    assert 2 <= kept < 16 and all(r["status"] == "ok" for r in doc["rows"])
    assert doc["status"] == "interrupted" and doc["interrupted_by"] == ("SIGINT" if sig == signal.SIGINT else "SIGTERM")
    assert f"kept the {kept} rows finished before it in {run_dir}" in stderr
    assert strict_load(out / "results.json")["rows"] == doc["rows"]  # nothing earlier to protect: published
    assert "| lenet5 " in stdout


def test_exception_mid_run_is_a_failed_row_and_the_rest_is_kept(
    arts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = engines.PREPARE["onnxruntime"]

    def flaky(ctx, precision, x):
        if x.shape[0] == 3:
            raise RuntimeError("[ONNXRuntimeError] : 6 : boom [red]\nsecond line of a long native error")
        return real(ctx, precision, x)

    monkeypatch.setitem(engines.PREPARE, "onnxruntime", flaky)
    out = tmp_path / "bench"
    assert bench(arts, out, models=("lenet5",)) == 1
    printed = capsys.readouterr()
    assert "Traceback" not in printed.err + printed.out
    rows = {(r["engine"], r["batch_size"]): r for r in strict_load(out / "results.json")["rows"]}
    assert rows[("onnxruntime", 3)]["status"] == "failed"
    reason = "RuntimeError: [ONNXRuntimeError] : 6 : boom [red]"
    assert rows[("onnxruntime", 3)]["reason"] == reason
    assert reason in printed.out  # printed as written: never taken for markup
    assert [rows[k]["status"] for k in (("onnxruntime", 1), ("pytorch", 1), ("pytorch", 3))] == ["ok"] * 3
    assert "onnxruntime fp32 failed" in printed.err and "1 rows not measured" in printed.out


def test_batch_that_cannot_fit_is_refused_with_the_estimate(arts: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench"
    args = ["--models", "resnet_cifar", "--batch-size", "1", "10000000", *QUICK]
    assert main([*args, "--output", str(out), "--artifacts-dir", str(arts)]) == 1
    printed = capsys.readouterr()
    assert "Traceback" not in printed.err
    rows = strict_load(out / "results.json")["rows"]
    big = [r for r in rows if r["batch_size"] == 10_000_000]
    assert len(big) == 2 and all(r["status"] == "refused" for r in big)
    assert "at batch 10000000 needs about" in big[0]["reason"] and "GB is available" in big[0]["reason"]
    assert all(r["status"] == "ok" for r in rows if r["batch_size"] == 1)


def test_unwritable_output_fails_before_anything_is_measured(
    arts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(runner, "resolve_device", lambda *a, **k: calls.append("device"))
    monkeypatch.setattr(runner, "resolve", lambda *a, **k: calls.append("resolve"))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert bench(arts, blocker / "bench") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot write in") and str(blocker) in err[0]
    assert calls == []


def test_fewer_rows_never_replace_more(arts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    assert bench(arts, out, models=("lenet5",)) == 0  # 4 rows
    full = (out / "results.json").read_bytes()
    assert (
        main(["--models", "lenet5", "--batch-size", "1", *QUICK, "--output", str(out), "--artifacts-dir", str(arts)])
        == 0
    )
    printed = capsys.readouterr().out
    assert (out / "results.json").read_bytes() == full
    assert "kept the earlier results" in printed and "(4 measured rows, more than this run's 2)" in printed
    short = [d for d in (out / "runs").iterdir() if len(strict_load(d / "results.json")["rows"]) == 2]
    assert len(short) == 1 and (short[0] / "latency.png").is_file()
    assert bench(arts, out, models=("lenet5",)) == 0  # as many rows again: the newer run wins
    assert (out / "results.json").read_bytes() != full


def test_user_model_artifact_needs_its_reference(
    arts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_file = write_user_model(tmp_path)
    export_model(f"{model_file}:make_tiny", input_shape=(3, 16, 16), output_dir=arts, name="tiny")
    out = tmp_path / "bench"
    common = ["--models", "tiny", "--batch-size", "2", *QUICK, "--output", str(out), "--artifacts-dir", str(arts)]

    assert main(common) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tiny is your own model" in err[0] and f"--reference {model_file}:make_tiny" in err[0]
    assert not out.exists()

    assert main([*common, "--reference", f"{model_file}:make_tiny"]) == 0
    rows = strict_load(out / "results.json")["rows"]
    assert {r["engine"] for r in rows} == {"onnxruntime", "pytorch"}
    assert all(r["status"] == "ok" and r["input_shape"] == [3, 16, 16] for r in rows)
    assert next(r for r in rows if r["engine"] == "onnxruntime")["parity"] == "pass"

    # the graph alone can be timed without the code, when asked for explicitly
    assert main([*common, "--no-parity", "--engines", "onnxruntime"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_zoo_model_exported_at_another_size_is_fed_that_size(arts: Path, tmp_path: Path) -> None:
    export_model("resnet_cifar", input_shape=(3, 40, 40), output_dir=arts, name="resnet_cifar40", batch_sizes=(1,))
    out = tmp_path / "bench"
    graph = arts / "resnet_cifar40" / "resnet_cifar40.onnx"
    for ref in (str(arts / "resnet_cifar40"), str(graph)):
        assert (
            main(["--models", ref, "--batch-size", "2", *QUICK, "--output", str(out), "--artifacts-dir", str(arts)])
            == 0
        )
        rows = strict_load(out / "results.json")["rows"]
        assert [(r["model"], r["input_shape"], r["status"]) for r in rows] == [
            ("resnet_cifar40", [3, 40, 40], "ok")
        ] * 2
        assert rows[0]["graph"] == str(graph)


def test_dynamic_size_artifact_at_each_input_size(
    arts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export_model("resnet_cifar", output_dir=arts, name="resnet_cifar_dyn", dynamic_size=True, batch_sizes=(1,))
    out = tmp_path / "bench"
    args = [
        "--models",
        "resnet_cifar_dyn",
        "--batch-size",
        "1",
        *QUICK,
        "--output",
        str(out),
        "--artifacts-dir",
        str(arts),
    ]
    assert main([*args, "--input-size", "40x40", "--input-size", "48x36"]) == 0
    rows = strict_load(out / "results.json")["rows"]
    assert sorted({tuple(r["input_shape"]) for r in rows}) == [(3, 40, 40), (3, 48, 36)]
    assert all(r["status"] == "ok" for r in rows)
    capsys.readouterr()
    fixed = ["--models", "lenet5", *QUICK, "--input-size", "40x40", "--output", str(out), "--artifacts-dir", str(arts)]
    assert main(fixed) == 2
    assert "lenet5 was exported at a fixed size 3x32x32" in capsys.readouterr().err


def test_graph_failing_parity_is_reported_not_timed(
    arts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from exporter.artifact import Tolerance
    from runtime.parity import check_artifact

    def strict(ctx, precision, batch_sizes, sizes, seed=1234):
        exact = Tolerance(atol=0.0, rtol=0.0, min_cosine=1.0)
        key = runner.art.VariantKey.parse(precision)
        return check_artifact(
            ctx.artifact,
            key,
            ctx.reference,
            ctx.graphs[precision],
            batch_sizes=batch_sizes,
            session=ctx.session,
            tolerance=exact,
        )

    monkeypatch.setattr(runner, "check_onnxruntime", strict)
    out = tmp_path / "bench"
    assert bench(arts, out, models=("resnet_cifar",)) == 1
    rows = strict_load(out / "results.json")["rows"]
    ort_rows = [r for r in rows if r["engine"] == "onnxruntime"]
    assert [r["status"] for r in ort_rows] == ["parity-failed"] * 2
    assert all(r["median_ms"] is None and "exceeds atol 0" in r["reason"] for r in ort_rows)
    assert all(r["status"] == "ok" for r in rows if r["engine"] == "pytorch")


def test_missing_artifact_is_exported_first_or_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arts, out = tmp_path / "artifacts", tmp_path / "bench"
    common = ["--models", "lenet5", "--batch-size", "1", *QUICK, "--output", str(out), "--artifacts-dir", str(arts)]
    assert main([*common, "--no-rebuild"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: no artifact for lenet5 in {arts}: export it: python -m exporter lenet5 --artifacts-dir {arts}"
    ]
    assert main(common) == 0
    assert f"note: no artifact for lenet5 in {arts}: exporting it with the defaults first" in capsys.readouterr().err
    assert (arts / "lenet5" / "manifest.json").is_file()
    assert [r["status"] for r in strict_load(out / "results.json")["rows"]] == ["ok", "ok"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--models", "lenet6"], "unknown model 'lenet6'"),
        (["--models", "lenet5", "--batch-size", "0"], "batch sizes must be at least 1"),
        (["--models", "lenet5", "--iterations", "0"], "--iterations must be at least 1"),
        (["--models", "lenet5", "--precision", "fp8"], "unknown precision 'fp8'"),
        (["--models", "lenet5", "--engines", "tvm"], "unknown engine tvm"),
        (["--models", "nowhere/lenet5.onnx"], "nowhere/lenet5.onnx does not exist"),
        (["--models", "lenet5", "--reference", "x.txt"], "bad --reference"),
        (["--models", "lenet5", "--max-ci-width", "nan"], "--max-ci-width must be a finite number"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], message: str, arts: Path, tmp_path: Path, capsys) -> None:
    assert main([*args, "--artifacts-dir", str(arts), "--output", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "b").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_ready(), reason="no CUDA GPU with onnxruntime-gpu")
@pytest.mark.parametrize("io_binding", [True, False])
def test_cuda_bench_with_and_without_io_binding(arts: Path, tmp_path: Path, io_binding: bool) -> None:
    out = tmp_path / "bench"
    args = [
        "--models",
        "resnet_cifar",
        "--device",
        "cuda",
        "--batch-size",
        "1",
        "8",
        "--engines",
        "onnxruntime",
        "pytorch",
    ]
    args += ["--min-samples", "20", "--min-seconds", "0.2", "--output", str(out), "--artifacts-dir", str(arts)]
    assert main(args + ([] if io_binding else ["--no-io-binding"])) == 0
    doc = strict_load(out / "results.json")
    assert doc["device"] == "cuda" and doc["environment"]["gpu_name"]
    assert doc["machine"]["device"] == "cuda" and doc["machine"]["matmul_gflops"] > 1000
    ort_rows = [r for r in doc["rows"] if r["engine"] == "onnxruntime"]
    assert all(r["device"] == "cuda" and r["io_binding"] is io_binding for r in ort_rows)
    assert all(r["cudnn_conv_algo_search"] == "EXHAUSTIVE" and r["tf32"] is True for r in ort_rows)
    assert all("CUDAExecutionProvider" in r["settings"]["providers"] for r in ort_rows)
    # TF32 is on by default on CUDA, for PyTorch's rows as for onnxruntime's, and every parity that ran passed
    assert all(r["tf32"] is True and r["parity"] in ("pass", None) for r in doc["rows"]), doc["rows"]
    pytorch = [r for r in doc["rows"] if r["engine"] == "pytorch"]
    assert pytorch and all(r["settings"]["tf32_matmul"] is True for r in pytorch), pytorch


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_ready(), reason="no CUDA GPU with onnxruntime-gpu")
def test_cuda_tensorrt_runs_or_says_why(arts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from runtime.bench.engines import unavailable_reason

    out = tmp_path / "bench"
    args = [
        "--models",
        "resnet_cifar",
        "--device",
        "cuda",
        "--batch-size",
        "4",
        "--engines",
        "onnxruntime",
        "tensorrt",
    ]
    args += ["--precision", "fp32", "fp16", "--min-samples", "20", "--min-seconds", "0.2"]
    assert main([*args, "--output", str(out), "--artifacts-dir", str(arts)]) == 0
    doc = strict_load(out / "results.json")
    why = unavailable_reason("tensorrt", "cuda")
    trt = [r for r in doc["rows"] if r["engine"] == "tensorrt"]
    if why:
        assert f"tensorrt: not available ({why})" in capsys.readouterr().err and not trt
    else:
        assert {r["precision"] for r in trt} == {"fp32", "fp16"}
        assert all(r["status"] == "ok" and "TensorrtExecutionProvider" in r["settings"]["providers"] for r in trt)
        assert all(r["setup_seconds"] > 0 for r in trt) and (arts / "resnet_cifar" / "tensorrt-cache").is_dir()


def test_a_speedup_over_a_contended_median_is_flagged(
    arts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tight ratio interval is not enough: PyTorch's median, taken while the CPU was busy, makes
    onnxruntime's "vs pytorch" meaningless (a fresh-venv trial printed 1356x unflagged)."""
    rng = np.random.default_rng()

    def contended(runners, policy, on_round=None):  # type: ignore[no-untyped-def]
        out = []
        for r in runners:
            steady = list(0.001 * (1 + 0.01 * rng.random(60)))
            # PyTorch: two undisturbed calls, then every call 50x slower (something else ran)
            busy = [0.0002, 0.0002] + list(0.01 * (1 + 0.01 * rng.random(58)))
            out.append(runner.Timed(r, samples=busy if r.engine == "pytorch" else steady, spent=0.06, rounds=6))
        return out

    monkeypatch.setattr(runner, "measure_interleaved", contended)
    out = tmp_path / "bench"
    bench(arts, out, models=("lenet5",))
    rows = {(r["engine"], r["batch_size"]): r for r in strict_load(out / "results.json")["rows"]}
    for batch in (1, 3):
        pt, ort = rows[("pytorch", batch)], rows[("onnxruntime", batch)]
        assert pt["unstable"] and any("contended" in why for why in pt["unstable_reasons"])
        assert ort["vs_pytorch"] == pytest.approx(10, rel=0.05)
        assert ort["vs_pytorch_ci_high"] / ort["vs_pytorch_ci_low"] < 1.2  # the interval alone looks sound
        assert ort["unstable"] and "vs pytorch rests on pytorch fp32, which is unstable" in ort["unstable_reasons"]
    assert "not to be trusted" in capsys.readouterr().out


def test_a_wide_interval_is_flagged_unstable_in_the_table_the_json_the_csv_and_the_summary(
    arts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """onnxruntime's calls half at 1 ms, half at 1.8 ms (under the 2x spread limit, so only the interval can tell):
    its median's 95% CI spans most of it, and the whole way out the row says so; PyTorch's tight median is
    flagged only for the ratio that rests on it."""
    rng = np.random.default_rng(1)

    def wide(runners, policy, on_round=None):  # type: ignore[no-untyped-def]
        out = []
        for r in runners:
            if r.engine == "onnxruntime":
                samples = list(rng.permutation([0.001] * 30 + [0.0018] * 30) * (1 + 0.001 * rng.random(60)))
            else:
                samples = list(0.005 * (1 + 0.01 * rng.random(60)))
            out.append(runner.Timed(r, samples=samples, spent=0.1, rounds=6))
        return out

    monkeypatch.setattr(runner, "measure_interleaved", wide)
    out = tmp_path / "bench"
    assert bench(arts, out, models=("lenet5",)) == 0
    printed = capsys.readouterr().out
    doc = strict_load(out / "results.json")
    rows = {(r["engine"], r["batch_size"]): r for r in doc["rows"]}
    for batch in (1, 3):
        ort, pt = rows[("onnxruntime", batch)], rows[("pytorch", batch)]
        assert ort["unstable"] and ort["unstable_reasons"][0].startswith("median 95% CI spans"), ort["unstable_reasons"]
        assert ort["median_ci_high_ms"] / ort["median_ci_low_ms"] > 1.3
        # its own median is sound: flagged only for the ratio to the best, which rests on onnxruntime's
        assert pt["unstable"] and all(why.startswith("vs best ") for why in pt["unstable_reasons"])
        assert "vs best rests on onnxruntime fp32, which is unstable" in pt["unstable_reasons"]
    table = [line for line in printed.splitlines() if line.startswith("| lenet5")]
    assert len(table) == 4 and all("unstable" in line for line in table), table
    with open(out / "results.csv", newline="") as fh:
        assert {r["unstable"] for r in csv.DictReader(fh)} == {"True"}
    assert "not to be trusted (4 of 4 rows" in printed
    flagged = [u for u in doc["untrustworthy"] if "onnxruntime fp32" in u and "median 95% CI spans" in u]
    assert len(flagged) == 2, doc["untrustworthy"]


def test_results_follow_artifacts_dir_and_nothing_lands_in_the_default(arts: Path, tmp_path: Path) -> None:
    """Defect (review): without --output the bench wrote artifacts/bench under the working folder whatever
    --artifacts-dir said (runtime.tune already followed it)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    args = ["--models", "lenet5", "--batch-size", "1", "--engines", "onnxruntime", "--min-samples", "3"]
    args += ["--min-seconds", "0", "--max-seconds", "1", "--warmup", "1", "--threads", "1", "--no-roofline"]
    done = subprocess.run(
        [sys.executable, "-m", "runtime.bench", *args, "--artifacts-dir", str(arts)],
        cwd=cwd, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (arts / "bench" / "results.json").is_file() and list(cwd.iterdir()) == []


def test_a_run_refused_for_disk_space_leaves_no_folder_it_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect (hostile pass, a full 3 MB tmpfs): the refusal was one clear line, but the run had made
    ``bench/`` on the way and left it empty. A folder that was there before stays."""
    import shutil
    from collections import namedtuple

    from exporter.errors import UserError
    from runtime.bench.store import ResultStore

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(3 << 20, 3 << 20, 0))
    with pytest.raises(UserError, match="not enough disk space for the benchmark's results"):
        ResultStore(tmp_path / "made" / "bench", "run1").prove_writable()
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(UserError, match="not enough disk space"):
        ResultStore(tmp_path / "kept", "run1").prove_writable()
    assert (tmp_path / "kept").is_dir()
