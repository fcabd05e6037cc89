"""Timing several engines of one (model, batch) so that a busy machine hits them alike.

The engines are timed **interleaved in rounds**: a block of calls of the first engine, a
block of the second, ..., then again, until every engine has at least ``min_samples`` timed
calls **and** ``min_seconds`` of timed running (or the group's ``max_seconds`` is spent).
Blocks are sized to about ``block_seconds`` each (and cut at twice that), so a slow engine
takes one call per round while a fast one takes many; something else using the CPU for a few
seconds then lands on every engine instead of on whichever happened to be running.

Each engine is warmed up first (untimed: cuDNN algorithm search, allocator growth, lazy
initialisation), at most ``warmup`` calls or ``warmup_seconds``, whichever ends first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from exporter.errors import UserError, first_line

if TYPE_CHECKING:
    from .engines import Runner

MAX_BLOCK = 10_000


@dataclass(frozen=True)
class TimingPolicy:
    """How much timing is enough. ``exact`` (``--iterations``) takes exactly that many samples."""

    min_samples: int = 20
    min_seconds: float = 1.0
    max_seconds: float = 60.0
    warmup: int = 3
    warmup_seconds: float = 2.0
    exact: int | None = None
    block_seconds: float | None = None

    def validate(self) -> None:
        if self.min_samples < 1:
            raise UserError("--min-samples must be at least 1")
        if not (self.min_seconds >= 0 and math.isfinite(self.min_seconds)):
            raise UserError("--min-seconds must be a finite number >= 0")
        if not (self.max_seconds > 0 and math.isfinite(self.max_seconds)):
            raise UserError("--max-seconds must be a finite number > 0")
        if self.warmup < 0:
            raise UserError("--warmup cannot be negative")
        if self.exact is not None and self.exact < 1:
            raise UserError("--iterations must be at least 1")

    @property
    def block(self) -> float:
        """Target duration of one block: about five rounds within the minimum time."""
        if self.block_seconds is not None:
            return self.block_seconds
        return max(self.min_seconds / 5, 0.02)


@dataclass
class Timed:
    """The timed samples of one engine in one group (seconds per call)."""

    runner: Runner
    samples: list[float] = field(default_factory=list)
    spent: float = 0.0
    rounds: int = 0
    error: str | None = None
    capped: bool = False


def warm_up(runner: Runner, policy: TimingPolicy, clock: Callable[[], float] = time.perf_counter) -> None:
    started = clock()
    for _ in range(policy.warmup):
        runner.step()
        if clock() - started >= policy.warmup_seconds:
            break


def _enough(t: Timed, policy: TimingPolicy) -> bool:
    if policy.exact is not None:
        return len(t.samples) >= policy.exact
    return len(t.samples) >= policy.min_samples and t.spent >= policy.min_seconds


def _block(t: Timed, policy: TimingPolicy) -> int:
    if not t.samples:
        n = 1
    else:
        typical = sorted(t.samples)[len(t.samples) // 2]
        n = max(1, min(MAX_BLOCK, int(policy.block / typical) if typical > 0 else MAX_BLOCK))
    if policy.exact is not None:
        n = min(n, policy.exact - len(t.samples))
    return n


def measure_interleaved(
    runners: Sequence[Runner],
    policy: TimingPolicy,
    clock: Callable[[], float] = time.perf_counter,
    on_round: Callable[[int], None] | None = None,
) -> list[Timed]:
    """Time ``runners`` in interleaved rounds (see the module docstring); one result per runner.

    An engine that raises is dropped from the rounds with its one-line error; the others go on.
    """
    timed = [Timed(r) for r in runners]
    for t in timed:
        try:
            warm_up(t.runner, policy, clock)
        except Exception as exc:  # one engine's failure is its row's, not the run's (Ctrl-C/SIGTERM pass)
            t.error = f"{type(exc).__name__}: {first_line(exc)}"
    started = clock()
    rounds = 0
    while True:
        active = [t for t in timed if t.error is None]
        if not active or all(_enough(t, policy) for t in active):
            break
        if clock() - started >= policy.max_seconds:
            for t in active:
                t.capped = not _enough(t, policy)
            break
        for t in active:
            n = _block(t, policy)
            if n <= 0:
                continue
            block_start = clock()
            try:
                for i in range(n):
                    # a block also ends when it has run twice its time: calls that turn 100x slower
                    # mid-run (a contended CPU) must not hold one engine for minutes
                    if i and clock() - block_start >= 2 * policy.block:
                        break
                    t.samples.append(t.runner.timer(t.runner.step))
            except Exception as exc:
                t.error = f"{type(exc).__name__}: {first_line(exc)}"
            t.spent += clock() - block_start
            t.rounds += 1
        rounds += 1
        if on_round is not None:
            on_round(rounds)
    return timed
