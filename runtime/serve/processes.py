"""Ending processes by id: terminate, give them a moment, kill what is left.

Used by the server's parent (:class:`runtime.serve.server.LocalServer`) and by the server
process itself, both of which must leave no process behind. Processes are always named by
id, never looked up by name, so nothing that belongs to someone else is touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import psutil


def end_processes(procs: Sequence[psutil.Process], grace_s: float) -> list[int]:
    """SIGTERM each process, SIGKILL those still alive after ``grace_s``; the ids that needed it.

    Some children ignore SIGTERM on purpose (multiprocessing's resource tracker, which
    pytriton's tensor store starts, outlives its users), so the kill is not an error.
    """
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    killed: list[int] = []
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
            killed.append(p.pid)
    psutil.wait_procs(alive, timeout=grace_s)
    return killed
