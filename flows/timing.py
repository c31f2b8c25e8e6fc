"""What Prefect costs a command, measured where it is paid, and logged when the command ends.

A command that runs a flow (`verse-etl ingest`, `tables`, `build`: every DVC stage but the
sample) pays Prefect on its critical path in these places, each timed here:

- ``import``: importing Prefect's flow and task engines and its top-level API, which sets up
  Prefect's logging (:func:`import_prefect`), and defining the flows and tasks of
  :mod:`verse_etl.flows.build` (each flow builds its parameter schema);
- ``server``: waiting for the Prefect API (what is left of the local server's start, or its
  health check; :func:`verse_etl.flows.server.prefect_api`), and handing it back at the end;
- ``flow run``: from calling the flow to the first line of its body, and from its last line
  back to the caller (the flow object with its task runner, run created, parameters, states,
  result);
- ``artifacts``: the progress artifact, created and updated in the flow's thread while the
  cases run (counted in full, though the cases go on meanwhile);
- ``task runs``: each task's wall time around its body, beyond the body (states, events);
  for the cases run on threads, the gaps of the thread that finished last (see
  :meth:`PrefectCost.task_runs`); cases on Dask workers are not timed here;
- ``flush``: sending the logs and events still queued when the flow has returned (otherwise
  paid at interpreter exit).

:meth:`PrefectCost.line` is the one line each command logs; ``benchmarks/prefect_share.py``
adds them up against the wall time of the whole build. The record is per process by nature
(one command, one record), like the stop request of :mod:`verse_etl.stopping`. Flows and
tasks name it as ``timing.COST``, never by a global of their own: a flow or task shipped to a
Dask worker is pickled with the globals it names, and the record holds a lock.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

LINE_PREFIX = "verse-etl prefect cost:"


@dataclass
class PrefectCost:
    """Seconds Prefect took on this process's critical path, per part."""

    parts: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    # (thread id, start, end) of each case body run on this process's threads
    spans: list[tuple[int, float, float]] = field(default_factory=list)
    submitted: float | None = None  # when the first case was submitted
    collected: float | None = None  # when the flow had every case's result
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Count the time inside as Prefect's ``name`` part."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.parts[name] += seconds

    @contextlib.contextmanager
    def body(self, name: str) -> Iterator[None]:
        """Around the body of a flow or of a task called in the flow's thread: its time is the
        library's, taken back from the ``name`` part timed around the call."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, start - time.perf_counter())

    @contextlib.contextmanager
    def case_body(self) -> Iterator[None]:
        """Around a case task's body (the library's work) on a worker thread."""
        start = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.spans.append((threading.get_ident(), start, time.perf_counter()))

    def task_runs(self) -> float:
        """Prefect's time around the case bodies on the thread whose last case ended last: from
        the first submission to its first body, between its bodies, and from its last body to
        the flow holding every result. That thread is on the critical path; the others' gaps
        overlap it."""
        if not self.spans or self.submitted is None or self.collected is None:
            return 0.0
        threads: dict[int, list[tuple[float, float]]] = defaultdict(list)
        for thread, start, end in self.spans:
            threads[thread].append((start, end))
        last = max(threads.values(), key=lambda spans: max(end for _, end in spans))
        busy = sum(end - start for start, end in last)
        return max(0.0, self.collected - self.submitted - busy)

    def new_run(self) -> None:
        """Forget an earlier flow in this process (a process that runs several, as tests do):
        its server wait, flow and task runs; the import, paid once per process, is kept."""
        with self._lock:
            for name in list(self.parts):
                if name != "import":
                    del self.parts[name]
            self.spans.clear()
            self.submitted = self.collected = None

    def total(self) -> float:
        return sum(max(0.0, s) for s in self.parts.values()) + self.task_runs()

    def line(self, command: str, wall: float) -> str:
        """One line: the command's wall time from process start and Prefect's part of it."""
        parts = {**self.parts, "task runs": self.parts.get("task runs", 0.0) + self.task_runs()}
        detail = ", ".join(f"{name} {max(0.0, s):.2f}" for name, s in parts.items())
        share = self.total() / wall if wall > 0 else 0.0
        return (
            f"{LINE_PREFIX} {command}: {self.total():.2f} s of {wall:.2f} s ({share:.0%}; {detail})"
        )


COST = PrefectCost()


def process_seconds() -> float:
    """Wall time since this process started (its start time from the kernel).

    On Linux from the process's start in clock ticks since boot (``/proc/self/stat``) against
    the time since boot now: both counted from the same boot, to 10 ms. psutil's
    ``create_time`` adds the start to a boot time it knows in whole seconds only, which put up
    to a second more or less into the cost line's wall time.
    """
    try:
        # The fields after the command name (which may hold spaces and parentheses).
        fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):  # not Linux
        import psutil

        return time.time() - psutil.Process().create_time()


def import_prefect() -> None:
    """Import Prefect's flow and task engines and its top-level API (``prefect.main``, which
    configures Prefect's logging), timed as Prefect's ``import`` part."""
    with COST.part("import"):
        import prefect.artifacts
        import prefect.flows
        import prefect.futures
        import prefect.main
        import prefect.task_engine
        import prefect.task_runners  # noqa: F401
