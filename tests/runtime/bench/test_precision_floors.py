"""The benchmark holds every row to the floor of the precision it computes in: int8 rows to the
int8 peak the probes measured, fp32 rows to the fp32 one (and bf16 rows, where the CPU has bf16,
to the bf16 one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.bench.__main__ import main
from tests.helpers import strict_load

from .conftest import QUICK


@pytest.mark.slow  # an int8 variant and two rounds of peak probes: about a minute here
def test_int8_rows_carry_floors_from_the_int8_peak(arts: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench"
    quick = [q for q in QUICK if q != "--no-roofline"]
    code = main(
        ["--models", "lenet5", "--batch-size", "8", "--precision", "fp32", "int8", "--engines", "onnxruntime"]
        + quick[2:]
        + ["--output", str(out), "--artifacts-dir", str(arts), "--wide"]  # every column: "% peak" is one to fit
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "int8 peak" in printed and "fp32 peak" in printed and "set against the fp32 peak" not in printed
    doc = strict_load(out / "results.json")
    machine = doc["machine"]
    rows = {r["precision"]: r for r in doc["rows"]}
    assert set(rows) == {"fp32", "int8"}
    for precision, row in rows.items():
        peak = machine["peaks"][precision]["gflops"]
        assert row["peak_precision"] == precision
        assert row["fraction_of_peak"] == pytest.approx(row["achieved_gflops"] / peak)
        assert row["floor_ms"] == pytest.approx(row["gflop"] / peak * 1e3)
    int8 = machine["peaks"]["int8"]
    assert int8["gflops"] == max(int8["probes"].values()) and len(int8["probes"]) >= 2
    assert machine["cpu_features"].keys() >= {"AVX-512", "VNNI", "AVX512-BF16", "AMX-INT8", "AMX-BF16"}
    assert f"{rows['int8']['fraction_of_peak']:.0%} int8" in printed
