"""One build at a time per workspace: an advisory lock on ``<out>/.verse-etl.lock``.

A second build started on the same output folder waits up to ``timeout`` seconds for the first
to finish, then refuses with a message naming the holder. The lock is an ``flock`` on an open
file, so the kernel releases it when the holder exits, even after SIGKILL: no stale lock files.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from verse_etl.errors import WorkspaceBusyError

LOCK_NAME = ".verse-etl.lock"


@contextmanager
def workspace_lock(out: Path, timeout: float = 0.0, poll: float = 0.5) -> Iterator[Path]:
    """Hold the build lock of ``out`` for the duration of the block.

    Parameters
    ----------
    timeout
        Seconds to wait for another build to finish; 0 refuses at once.

    Raises
    ------
    WorkspaceBusyError
        If another process holds the lock after ``timeout`` seconds.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                    raise WorkspaceBusyError(
                        f"{out}: another build is running on this workspace ({holder}); "
                        "wait for it to finish, or pass --wait SECONDS"
                    ) from None
                time.sleep(poll)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing releases the flock
