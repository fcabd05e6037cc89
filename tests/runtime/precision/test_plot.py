"""The precision search's Pareto plot: a candidate judged and timed with its float layers in OpenVINO's bf16
is the same graph, with the same float count, as its f32 twin, and must not read as a second copy of it."""

from __future__ import annotations

import pytest

from exporter import artifact as art
from runtime.precision.plot import BF16_LEGEND, pareto_figure, pareto_png

pytest.importorskip("matplotlib")


def _search(hints: list[str | None]) -> art.PrecisionSearchRecord:
    cands = [
        art.SearchCandidate(label=f"greedy {i}", float_layers=["a", "b"], float_nodes=["n"], sqnr_db=30.0 + i,
                            cosine_min=0.999, passed=True, latency_ms=1.0 + i, latency_low_ms=0.9 + i,
                            latency_high_ms=1.1 + i, chosen=i == 1, openvino_hint=h)  # type: ignore[arg-type]
        for i, h in enumerate(hints)
    ]  # fmt: skip
    return art.PrecisionSearchRecord(
        candidates=cands, budget="SQNR >= 20 dB against fp32", metric="sqnr", threshold=20.0, target="cpu",
        engine="openvino", device="cpu", threads=2, batch_size=1, fp32_ms=3.1, fp32_low_ms=3.0, fp32_high_ms=3.3,
        float_layers=[],
    )  # fmt: skip


def _drawn(search: art.PrecisionSearchRecord) -> tuple[list[str], list[str], list[str]]:
    """(the candidates' markers, their annotations, the legend's labels) as drawn."""
    import matplotlib.pyplot as plt

    fig = pareto_figure(search, "m --precision auto")
    ax = fig.axes[0]
    # errorbar's data line: one point at the candidate; the chosen ring is an unfilled "o" of ms 13
    markers = [str(line.get_marker()) for line in ax.lines if len(line.get_xdata()) == 1 and line.get_markersize() == 5]
    notes = [t.get_text() for t in ax.texts]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(fig)
    return markers, notes, legend


def test_a_bf16_candidate_is_drawn_as_a_square_and_named_so() -> None:
    """Defect: a bf16 twin was a circle annotated "2 float", like its f32 twin beside it."""
    markers, notes, legend = _drawn(_search([None, "bf16"]))
    assert markers == ["o", "s"]
    assert notes == ["2 float", "2 float bf16"]
    assert BF16_LEGEND in legend


def test_without_bf16_candidates_the_plot_is_as_before() -> None:
    markers, notes, legend = _drawn(_search([None, None]))
    assert markers == ["o", "o"] and notes == ["2 float", "2 float"]
    assert BF16_LEGEND not in legend
    assert pareto_png(_search([None, "bf16"]), "m")[:4] == b"\x89PNG"
