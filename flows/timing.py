"""What Prefect costs a command, measured where it is paid, and logged when the command ends.

A command that runs a flow (`verse-etl ingest`, `tables`, `build`: every DVC stage but the
sample) pays Prefect on its critical path in these places, each timed here:

- ``import``: importing Prefect's flow and task engines and its top-level API, which sets up
  Prefect's logging (:func:`import_prefect`), and defining the flows and tasks of
  :mod:`verse_etl.flows.build` (each flow builds its parameter schema). Timed as what Prefect
  adds: a command imports the library its flows compose first (:func:`import_library`), so
  that the modules both use (pydantic, fsspec, dateutil, ...: 0.1-0.15 s here) count as the
  library's, which imports them without Prefect too;
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
- ``logs``: making the run-log records of the flow's body API logs (:func:`_count_api_logs`);
- ``flush``: sending the logs and events still queued when the flow has returned (otherwise
  paid at interpreter exit).

:meth:`PrefectCost.line` is the one line each command logs; ``benchmarks/prefect_share.py``
adds them up against the wall time of the whole build. The record is per process by nature
(one command, one record), like the stop request of :mod:`verse_etl.stopping`. Flows and
tasks name it as ``timing.COST``, never by a global of their own: a flow or task shipped to a
Dask worker is pickled with the globals it names, and the record holds a lock.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LINE_PREFIX = "verse-etl prefect cost:"
FLOWS = "verse_etl.flows"  # the package of the flows (flows/ in the repository)


@dataclass
class PrefectCost:
    """Seconds Prefect took on this process's critical path, per part."""

    parts: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    # (thread id, start, end) of each case body run on this process's threads
    spans: list[tuple[int, float, float]] = field(default_factory=list)
    submitted: float | None = None  # when the first case was submitted
    collected: float | None = None  # when the flow had every case's result
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _inside: threading.local = field(default_factory=threading.local)  # bodies open per thread

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
        self._inside.depth = getattr(self._inside, "depth", 0) + 1
        try:
            yield
        finally:
            self._inside.depth -= 1
            self.add(name, start - time.perf_counter())

    def in_body(self) -> bool:
        """Whether this thread is in a body (:meth:`body`): its time is the library's."""
        return getattr(self._inside, "depth", 0) > 0

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
        parts = dict(self.parts)
        if "task runs" in parts or self.spans:  # a command without tasks (server start) has none
            parts["task runs"] = parts.get("task runs", 0.0) + self.task_runs()
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

        _count_api_logs()


def _count_api_logs() -> None:
    """Time Prefect's API log handler in the bodies of the flow and of the tasks it calls in
    its thread as Prefect's ``logs`` part: it makes each run-log record an API log there, ~1 ms
    a record here, before its worker sends it. (Outside the bodies it is in the part timed
    around them already; in a case's thread it is left in the case's body, timed as the
    library's: a tenth of it in a build.)"""
    import logging

    from prefect.logging.handlers import APILogHandler

    for name in ("prefect.flow_runs", "prefect.task_runs", "prefect.extra"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, APILogHandler) and "emit" not in vars(handler):
                emit = handler.emit

                def timed(record: logging.LogRecord, emit: Any = emit) -> None:
                    if not COST.in_body():
                        return emit(record)
                    with COST.part("logs"):
                        return emit(record)

                # this handler's emit, timed; the class and other handlers untouched
                handler.emit = timed  # type: ignore[method-assign]


def import_library(module: str) -> None:
    """Import the verse_etl library that the flow module ``module`` composes, without running
    ``module`` itself (which imports Prefect): every library module it imports at its top level,
    and those imported by the ``verse_etl.flows`` modules it imports, found in their sources.
    The reading of the sources is counted as Prefect's import (a few ms); the library's import
    is not."""
    with COST.part("import"):
        library = _library_imports(module, seen=set())
    for name, names in library:
        imported = importlib.import_module(name)
        if hasattr(imported, "__path__"):  # a package: `from package import submodule`
            for attribute in names:
                if not hasattr(imported, attribute) and importlib.util.find_spec(
                    f"{name}.{attribute}"
                ):
                    importlib.import_module(f"{name}.{attribute}")


def _library_imports(module: str, seen: set[str]) -> list[tuple[str, list[str]]]:
    """The library modules the ``verse_etl.flows`` module ``module`` imports at its top level
    (and through the flows modules it imports), each with the names imported from it."""
    seen.add(module)
    spec = importlib.util.find_spec(module)  # its package, verse_etl.flows, is imported already
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return []
    found: list[tuple[str, list[str]]] = []
    for node in ast.parse(Path(spec.origin).read_text(), spec.origin).body:
        imports: list[tuple[str, list[str]]]
        if isinstance(node, ast.Import):
            imports = [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [alias.name for alias in node.names]
            if node.module == FLOWS:  # `from verse_etl.flows import timing`: flows modules
                imports = [(f"{FLOWS}.{name}", []) for name in names]
            else:
                imports = [(node.module, names)]
        else:
            continue
        for name, names in imports:
            if name in seen or not (name == "verse_etl" or name.startswith("verse_etl.")):
                continue
            if name.startswith(f"{FLOWS}."):
                found += _library_imports(name, seen)  # never imported here: it imports Prefect
            elif name != FLOWS:
                seen.add(name)
                found.append((name, names))
    return found
