"""Interleaved timing: engines alternate in rounds until each has enough samples and time."""

from __future__ import annotations

from itertools import groupby

import numpy as np

from runtime.bench.engines import Runner
from runtime.bench.timing import TimingPolicy, measure_interleaved


def fake(name: str, log: list[str], seconds: float, fail_after: int | None = None) -> Runner:
    """A runner whose every call is logged and 'takes' ``seconds`` (the timer reports it)."""
    calls = {"n": 0}

    def step() -> None:
        calls["n"] += 1
        if fail_after is not None and calls["n"] > fail_after:
            raise RuntimeError("device lost")
        log.append(name)

    def timer(fn) -> float:  # type: ignore[no-untyped-def]
        fn()
        return seconds

    return Runner(name, "fp32", "cpu", step, lambda x: [np.zeros(1)], timer)


def test_engines_alternate_in_rounds() -> None:
    log: list[str] = []
    runners = [fake("A", log, 0.001), fake("B", log, 0.004)]
    policy = TimingPolicy(min_samples=12, min_seconds=0.0, warmup=0, block_seconds=0.004)
    timed = measure_interleaved(runners, policy)
    runs = [(name, len(list(group))) for name, group in groupby(log)]
    assert [name for name, _ in runs][:6] == ["A", "B", "A", "B", "A", "B"]
    # blocks sized to the block time: after the first call, A (1 ms) runs 4 per block, B (4 ms) runs 1
    assert all(n == 4 for name, n in runs[2:-2] if name == "A")
    assert all(n == 1 for name, n in runs if name == "B")
    assert all(len(t.samples) >= 12 for t in timed)
    assert timed[0].rounds == timed[1].rounds  # every round times every engine


def test_warm_up_is_not_timed() -> None:
    log: list[str] = []
    timed = measure_interleaved([fake("A", log, 0.001)], TimingPolicy(min_samples=5, min_seconds=0.0, warmup=3))
    assert len(log) == 3 + len(timed[0].samples) and len(timed[0].samples) >= 5


def test_exact_iterations() -> None:
    log: list[str] = []
    timed = measure_interleaved(
        [fake("A", log, 0.001), fake("B", log, 0.002)], TimingPolicy(exact=7, warmup=0, block_seconds=0.003)
    )
    assert [len(t.samples) for t in timed] == [7, 7]


def test_minimum_time_per_engine() -> None:
    """Enough samples is not enough: each engine also runs for the minimum time."""
    log: list[str] = []
    timed = measure_interleaved(
        [fake("A", log, 0.0)], TimingPolicy(min_samples=1, min_seconds=0.05, warmup=0, block_seconds=0.01)
    )
    assert timed[0].spent >= 0.05


def test_failing_engine_is_dropped_with_its_reason_and_the_others_go_on() -> None:
    log: list[str] = []
    timed = measure_interleaved(
        [fake("A", log, 0.001, fail_after=3), fake("B", log, 0.001)],
        TimingPolicy(min_samples=10, min_seconds=0.0, warmup=0, block_seconds=0.001),
    )
    assert timed[0].error == "RuntimeError: device lost"
    assert timed[1].error is None and len(timed[1].samples) >= 10


def test_time_cap_marks_engines_short_of_samples() -> None:
    log: list[str] = []
    clock = iter(range(1000))
    timed = measure_interleaved(
        [fake("A", log, 1.0)],
        TimingPolicy(min_samples=100, min_seconds=0.0, max_seconds=5.0, warmup=0),
        clock=lambda: float(next(clock)),
    )
    assert timed[0].capped and len(timed[0].samples) < 100


def test_a_block_is_cut_when_calls_turn_slow() -> None:
    """Blocks sized from fast calls must not run hundreds of calls once they become 100x slower."""
    now = [0.0]
    log: list[str] = []

    def step() -> None:
        log.append("A")
        now[0] += 0.001 if len(log) <= 50 else 0.1  # fast, then contended

    runner = Runner("A", "fp32", "cpu", step, lambda x: [np.zeros(1)], lambda fn: (fn(), 0.0)[1] + 0.001)
    policy = TimingPolicy(min_samples=200, min_seconds=0.0, max_seconds=1000.0, warmup=0, block_seconds=0.05)
    timed = measure_interleaved([runner], policy, clock=lambda: now[0])
    assert len(timed[0].samples) >= 200
    # 150 calls at 100 ms: blocks cut after 2 x 50 ms hold one or two calls each (uncut: 50 a block, ~7 rounds)
    assert timed[0].rounds > 60
