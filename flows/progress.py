"""Progress of an ingest that people can read: cases done, rate (cases/s and MB/s), ETA.

On a terminal a rich progress bar (the run's log lines print above it); elsewhere (DVC logs, CI)
a plain line per finished case with the same figures, and one every ``every`` seconds while no
case finishes. In the Prefect UI a progress artifact follows the same count. Inside a long case,
:func:`heartbeat` says it is still running.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

HEARTBEAT_SECONDS = 30.0
"""How often a case still running says so, and how often the plain display says where it is."""


def source_bytes(case: Any) -> int:
    """Bytes of a case's input files (a VerSe scan or a MosMed study), for the MB/s figure.

    Zip members count their compressed size; files that vanished count 0 (the case reports them).
    """
    total = 0
    for f in getattr(case, "files", ()):  # VerSe: CT, mask, centroids, sidecar
        with contextlib.suppress(OSError, KeyError, zipfile.BadZipFile):
            if f.member:
                with zipfile.ZipFile(f.path) as archive:
                    total += archive.getinfo(f.member).compress_size
            else:
                total += f.path.stat().st_size
    folder = getattr(case, "dicom_dir", None)  # MosMed: the DICOM folder, else the archive
    if folder is not None:
        for root, _, names in os.walk(folder):
            for name in names:
                with contextlib.suppress(OSError):
                    total += (Path(root) / name).stat().st_size
    elif getattr(case, "archive", None) is not None:
        with contextlib.suppress(OSError):
            total += case.archive.stat().st_size
    return total


def _figures(done: int, total: int, ran: int, nbytes: int, seconds: float) -> str:
    """The figures of a progress line: ``ran`` of the ``done`` cases ran (``nbytes`` of their
    input); the others kept their saved results at once, and would make the rate a count of
    files looked at, not of cases built."""
    rate = ran / seconds if seconds > 0 else 0.0
    mbps = nbytes / 1e6 / seconds if seconds > 0 else 0.0
    eta = f"ETA {(total - done) / rate:.0f} s" if rate > 0 and done < total else "ETA -"
    return f"{seconds:.0f} s elapsed, {rate:.2f} cases/s, {mbps:.1f} MB/s, {eta}"


class IngestProgress:
    """Count finished cases of one ingest and show it (bar on a terminal, lines elsewhere).

    ``log`` receives the plain lines (the flow run's logger); ``on_case`` is called with the
    percentage after each case (the progress artifact).
    """

    def __init__(
        self,
        total: int,
        total_bytes: int,
        log: Callable[[str], None],
        on_case: Callable[[float], None] | None = None,
        terminal: bool | None = None,
        every: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.total, self.total_bytes, self.log, self.on_case = total, total_bytes, log, on_case
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.every = every
        self.done = 0
        self.ran = 0  # of the done cases, those that ran (not kept as saved)
        self.bytes_done = 0  # input bytes of the cases that ran
        self.start = time.perf_counter()
        self._last_line = self.start
        self._bar: Progress | None = None
        self._task: Any = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._swapped: list[tuple[Any, Any]] = []

    def __enter__(self) -> IngestProgress:
        if self.terminal and self.total:
            console = Console(stderr=True)
            self._bar = Progress(
                TextColumn("ingest"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("cases {task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
            )
            self._task = self._bar.add_task("ingest", total=self.total, rate="")
            self._bar.start()
            # Prefect's console handlers print through the bar's console: log lines then
            # appear above the bar instead of tearing it.
            for handler in _console_handlers():
                self._swapped.append((handler, handler.console))
                handler.console = console
        elif self.total:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        return self

    def case_done(self, nbytes: int, kept: bool = False) -> str:
        """Count one finished case of ``nbytes`` input bytes; return the figures so far. A case
        ``kept`` (its saved result taken without running it) counts as done, not in the rate,
        the MB/s or the ETA."""
        self.done += 1
        if not kept:
            self.ran += 1
            self.bytes_done += nbytes
        seconds = time.perf_counter() - self.start
        figures = _figures(self.done, self.total, self.ran, self.bytes_done, seconds)
        self._last_line = time.perf_counter()
        if self._bar is not None:
            mbps = self.bytes_done / 1e6 / seconds if seconds > 0 else 0.0
            rate = f"{self.ran / seconds:.2f}/s {mbps:.1f} MB/s" if seconds > 0 else ""
            self._bar.update(self._task, completed=self.done, rate=rate)
        if self.on_case is not None:
            self.on_case(100.0 * self.done / self.total if self.total else 100.0)
        return figures

    def _tick(self) -> None:
        while not self._stop.wait(min(self.every, 5.0)):
            if time.perf_counter() - self._last_line >= self.every and self.done < self.total:
                seconds = time.perf_counter() - self.start
                self.log(
                    f"progress: {self.done}/{self.total} cases, "
                    f"{_figures(self.done, self.total, self.ran, self.bytes_done, seconds)}"
                )
                self._last_line = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        for handler, console in self._swapped:
            handler.console = console
        if self._bar is not None:
            self._bar.stop()


def _console_handlers() -> list[Any]:
    """Prefect's console log handlers (none if Prefect's logging is not loaded)."""
    module = sys.modules.get("prefect.logging.handlers")
    if module is None:
        return []
    PrefectConsoleHandler = module.PrefectConsoleHandler
    handlers = []
    for name in [None, *logging.root.manager.loggerDict]:
        logger = logging.getLogger(name)
        handlers += [
            h for h in getattr(logger, "handlers", []) if isinstance(h, PrefectConsoleHandler)
        ]
    return list({id(h): h for h in handlers}.values())


@dataclass
class _Beat:
    log: Callable[[str], None]
    what: str
    start: float
    every: float
    due: float  # when it next says so


class _Heartbeats:
    """The cases running in this process that say so every so often, and the one thread that
    says it for all of them (started with the first). A thread per case cost two hand-overs of
    Python's lock, to start it and to join it: 15-35 ms a case while the other threads run
    Python, on the critical path of every case."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._beats: dict[int, _Beat] = {}
        self._keys = itertools.count()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def beating(self, log: Callable[[str], None], what: str, every: float) -> Iterator[None]:
        start = time.perf_counter()
        key = next(self._keys)
        with self._changed:
            self._beats[key] = _Beat(log, what, start, every, start + every)
            if self._thread is None or not self._thread.is_alive():  # the first, or after fork
                self._thread = threading.Thread(
                    target=self._run, name="verse-etl-heartbeat", daemon=True
                )
                self._thread.start()
            self._changed.notify()  # its first beat may be due before those waited for
        try:
            yield
        finally:
            with self._changed:
                del self._beats[key]

    def _run(self) -> None:
        lines: list[tuple[Callable[[str], None], str]] = []
        while True:
            for log, line in lines:  # outside the lock: a log call may be slow (the API)
                try:
                    log(line)
                except Exception:  # a view of the build: never stop saying it for the others
                    logging.getLogger(__name__).debug("heartbeat not logged", exc_info=True)
            with self._changed:
                while True:
                    now = time.perf_counter()
                    due = [b for b in self._beats.values() if b.due <= now]
                    if due:
                        break
                    wait = min((b.due for b in self._beats.values()), default=None)
                    self._changed.wait(None if wait is None else wait - now)
                for beat in due:
                    beat.due = now + beat.every
                lines = [(b.log, f"{b.what}: still running ({now - b.start:.0f} s)") for b in due]


# One per process, like the stop request of verse_etl.stopping: the cases of a build (threads of
# this process, or of a Dask worker's) share its thread.
_HEARTBEATS = _Heartbeats()


def heartbeat(
    log: Callable[[str], None], what: str, every: float = HEARTBEAT_SECONDS
) -> contextlib.AbstractContextManager[None]:
    """While inside, say every ``every`` seconds that ``what`` is still running and for how long
    (through ``log``, from this process's heartbeat thread)."""
    return _HEARTBEATS.beating(log, what, every)
