"""Keeping a local Triton up: restart it when it crashes, a bounded number of times, with back-off.

A server users depend on must come back whatever kills it: a request that crashes tritonserver
(Triton's HTTP front end allocates what a JSON request's shape declares before anything checks
that shape, so one request declaring 2^40 rows ends the process with ``std::bad_alloc``), the
kernel's OOM killer, a stray ``kill``. :class:`Supervisor` watches a started
:class:`~runtime.serve.server.LocalServer`; when it dies, it reports the crash (which process,
its exit code or signal, the log's last lines), stops what is left of it (its processes, shared
memory and Triton's model copy), waits, and starts it again on the same ports.

Restarts are bounded: after ``max_restarts`` crashes in a row it gives up with
:class:`~runtime.serve.server.ServerFailed`. A crash after the server had been up for
``stable_s`` or more starts the count again, so a server that crashes once a day is restarted
every day; one that crashes as soon as it is up is given up on. The wait before each restart
doubles from ``backoff_s`` up to ``max_backoff_s``.

Nothing here prints: events go to the callbacks the caller passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from exporter.errors import UserError

from .server import Crash, LocalServer, ServerFailed, ServerInfo

#: seconds between two looks at the server
POLL_S = 0.5


@dataclass(frozen=True)
class RestartPolicy:
    """How often and how fast a crashed server is started again."""

    #: crashes in a row after which the server is not restarted (0: never restart)
    max_restarts: int = 5
    #: the wait before the first restart of a row; it doubles with each further one
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    #: a server up this long before it crashed starts a new row
    stable_s: float = 60.0

    def check(self) -> None:
        if self.max_restarts < 0:
            raise UserError(f"--max-restarts must be 0 or more, got {self.max_restarts}")
        if self.backoff_s < 0 or self.max_backoff_s < self.backoff_s or self.stable_s < 0:
            raise UserError("the restart back-off must be 0 or more seconds, and its maximum at least its start")

    def delay(self, in_a_row: int) -> float:
        """The wait before the ``in_a_row``-th restart of a row (1, 2, ...)."""
        return min(self.backoff_s * 2 ** max(0, in_a_row - 1), self.max_backoff_s)


@dataclass(frozen=True)
class Restart:
    """One restart: the crash that caused it, and how it went."""

    number: int  # 1, 2, ... over the whole supervision
    in_a_row: int  # its place in the current row of crashes
    crash: Crash
    delay_s: float
    #: the restarted server, or None where the restart itself failed
    info: ServerInfo | None = None
    error: str | None = None


class Supervisor:
    """Watch a started server and restart it after crashes (see the module docstring).

    :meth:`run` returns never: it ends with KeyboardInterrupt (or the caller's own signal
    exception) propagating, or with :class:`ServerFailed` once the restarts are used up. The
    server is left for the caller to :meth:`~LocalServer.stop`; :attr:`restarts` lists every
    restart made.
    """

    def __init__(
        self,
        server: LocalServer,
        policy: RestartPolicy | None = None,
        *,
        on_crash: Callable[[Restart], None] | None = None,
        on_restart: Callable[[Restart], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        poll_s: float = POLL_S,
    ) -> None:
        self.server = server
        self.policy = policy or RestartPolicy()
        self.policy.check()
        self._on_crash = on_crash or (lambda _r: None)
        self._on_restart = on_restart or (lambda _r: None)
        self._sleep = sleep
        self._poll_s = poll_s
        self.restarts: list[Restart] = []

    def run(self) -> None:
        in_a_row = 0
        while True:
            crash = self._wait_for_crash()
            if crash.uptime_s >= self.policy.stable_s:
                in_a_row = 0
            in_a_row = self._restart(crash, in_a_row)

    def _wait_for_crash(self) -> Crash:
        while True:
            crash = self.server.poll()
            if crash is not None:
                return crash
            self._sleep(self._poll_s)

    def _restart(self, crash: Crash, in_a_row: int) -> int:
        """Restart until the server is up again (the row's count returned) or the restarts run out."""
        while True:
            in_a_row += 1
            if in_a_row > self.policy.max_restarts:
                self.server.stop()  # its processes, shared memory and model copy go; the log stays
                raise self._gave_up(crash, in_a_row - 1)
            restart = Restart(len(self.restarts) + 1, in_a_row, crash, self.policy.delay(in_a_row))
            self._on_crash(restart)
            self.server.stop()
            self._sleep(restart.delay_s)
            started = time.monotonic()
            try:
                info = self.server.start()
            except UserError as exc:  # ServerFailed, or a port taken meanwhile
                failed = Restart(restart.number, in_a_row, crash, restart.delay_s, error=str(exc))
                self.restarts.append(failed)
                self._on_restart(failed)
                log_tail = exc.log_tail if isinstance(exc, ServerFailed) else []
                crash = Crash("restart", None, None, str(exc), log_tail, time.monotonic() - started)
                continue
            done = Restart(restart.number, in_a_row, crash, restart.delay_s, info=info)
            self.restarts.append(done)
            self._on_restart(done)
            return in_a_row

    def _gave_up(self, crash: Crash, restarts_in_a_row: int) -> ServerFailed:
        log = self.server.log_path
        where = f" (log: {log})" if log is not None else ""
        if self.policy.max_restarts == 0:
            why = "not restarted (--max-restarts 0)"
        else:
            why = (
                f"not restarted again: it crashed {restarts_in_a_row + 1} times in a row "
                f"(--max-restarts {self.policy.max_restarts}; {len(self.restarts)} restarts in all)"
            )
        return ServerFailed(f"Triton crashed: {crash.describe()}; {why}{where}", crash.log_tail, log)


__all__ = ["POLL_S", "Restart", "RestartPolicy", "Supervisor"]
