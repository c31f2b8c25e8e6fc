"""Stopping a build on Ctrl-C or SIGTERM within seconds, even while a case is busy.

Python delivers signals to the main thread only, and a thread pool waits for its running tasks
before the process may exit: a case streaming a large volume (or blocked in a read) kept the
build alive long after Ctrl-C. So:

1. :func:`stop_on_signals` (around a build, in the main thread) turns SIGINT and SIGTERM into a
   stop request and a ``KeyboardInterrupt`` in the main thread, after calling any handler that
   was installed before it (another component's cleanup runs first);
2. the readers call :func:`check_stop` between slabs, slices and files, so a running case ends
   at its next step with :class:`BuildStopped` (never quarantined, never retried), and the
   store it was writing is discarded as after any exception;
3. a case blocked inside one system call cannot be interrupted from Python: if a worker
   thread is still alive ``grace_s`` seconds after the signal, the ``atexit`` handlers run and
   the process exits with ``128 + signal``. Outputs stay consistent: everything is published by
   rename, so an unfinished case leaves only temporary files, removed by the next build.

The stop request is process-wide state by nature (a signal is delivered to the process).
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_STOP = threading.Event()
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class BuildStopped(BaseException):
    """A signal asked the build to stop.

    A ``BaseException`` like ``KeyboardInterrupt``: no case seals it into a quarantine record
    and no retry policy retries it.
    """


def request_stop() -> None:
    """Ask every running case to stop at its next step."""
    _STOP.set()


def stop_requested() -> bool:
    """True once a stop was requested."""
    return _STOP.is_set()


def check_stop() -> None:
    """Raise :class:`BuildStopped` if a stop was requested (call between units of work)."""
    if _STOP.is_set():
        raise BuildStopped("the build was asked to stop (SIGINT or SIGTERM)")


def _exit_after(grace_s: float, signum: int) -> None:
    time.sleep(grace_s)
    main = threading.main_thread()
    if not any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not main):
        return  # no worker left: the main thread is finishing its own cleanup, let it
    name = signal.Signals(signum).name
    sys.stderr.write(
        f"verse-etl: still running {grace_s:g} s after {name} (a case is blocked in a read); "
        "exiting without it. Nothing half-written is visible: the next build clears it.\n"
    )
    sys.stderr.flush()
    atexit._run_exitfuncs()  # other components' cleanup (e.g. a server they started)
    os._exit(128 + signum)


@contextmanager
def stop_on_signals(grace_s: float = 10.0) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM stop the build (see the module docstring).

    Does nothing outside the main thread (signal handlers can only be set there). The previous
    handlers are called first and restored on exit; a second signal exits at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}

    def handler(signum: int, frame: FrameType | None) -> None:
        if _STOP.is_set():  # a second signal: the user means it
            atexit._run_exitfuncs()
            os._exit(128 + signum)
        request_stop()
        threading.Thread(
            target=_exit_after, args=(grace_s, signum), name="verse-etl-stop", daemon=True
        ).start()
        earlier = previous[signal.Signals(signum)]
        if callable(earlier) and earlier is not signal.default_int_handler:
            earlier(signum, frame)
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    for sig in _SIGNALS:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, earlier in previous.items():
            signal.signal(sig, earlier)
        _STOP.clear()
