"""Exceptions raised by verse-etl.

Every message reads ``"<path>: <what is wrong> (expected X, got Y); <what to do>"`` so that a
quarantine row or a log line is enough to find and fix the input.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class VerseEtlError(Exception):
    """Base class of every error verse-etl raises on purpose.

    ``exit_code`` and ``label`` say how the command line reports it: 2 for bad input or
    configuration unless a subclass says otherwise.
    """

    exit_code: int = 2
    label: str = "error"


class InputError(VerseEtlError, ValueError):
    """A source file is unreadable, malformed or inconsistent.

    Parameters
    ----------
    path
        The file (or folder) at fault: anything whose ``str()`` names it (a ``Path``, a string,
        an archive member's ``SourceFile``).
    problem
        What is wrong, with expected and found values where they exist.
    fix
        What the user can do about it.
    check
        A short machine-readable name of the failed check (goes to ``quarantine.check_name``).
    """

    def __init__(self, path: object, problem: str, fix: str = "", check: str = "read") -> None:
        self.path = str(path)
        # One line: a quarantine reason or a log line (library messages such as pydicom's list
        # every plugin's error on its own line).
        self.problem = re.sub(r"\s*\n\s*", " ", str(problem)).strip()
        fix = re.sub(r"\s*\n\s*", " ", str(fix)).strip()
        self.fix = fix
        self.check = check
        message = f"{self.path}: {self.problem}"
        if fix:
            message += f"; {fix}"
        super().__init__(message)


class ParamsError(VerseEtlError, ValueError):
    """``params.yaml`` (or a CLI option) holds a value the pipeline cannot use."""


class WorkspaceBusyError(VerseEtlError, RuntimeError):
    """Another build holds the workspace lock."""

    exit_code = 3
    label = "busy"


class OutputPathError(VerseEtlError, ValueError):
    """A path about to be written or deleted lies outside the build root (or escapes it through
    a symbolic link): refused before anything is touched."""


class BuildFailed(VerseEtlError):
    """Some records failed checks whose mode is ``raise``; everything else was written.

    Raised by the tables step after every table is written; the CLI exits 1.
    """

    exit_code = 1
    label = "build failed"


class StaleResultError(VerseEtlError, ValueError):
    """A saved intermediate result (a case result) is of an older format than this code reads:
    the step that makes it has to run again."""


class UnknownCaseError(VerseEtlError, KeyError):
    """A case id that a built dataset does not hold (``Dataset[...]``, exports)."""

    def __str__(self) -> str:
        # KeyError quotes its message (repr); the CLI prints it as a sentence.
        return str(self.args[0]) if self.args else ""


class OutputError(VerseEtlError, OSError):
    """The build cannot write its outputs (disk full, quota, read-only filesystem).

    Not a problem of one case: the build stops, with one line naming the path.
    """

    exit_code = 4
    label = "cannot write"


TRANSIENT_ERRNOS: frozenset[int] = frozenset(
    {
        errno.EIO,
        errno.EAGAIN,
        errno.ETIMEDOUT,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ECONNREFUSED,
        errno.EHOSTUNREACH,
        errno.EHOSTDOWN,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ENETRESET,
        errno.ESTALE,  # NFS: the file handle went stale under a remount
        errno.EREMOTEIO,
    }
)
"""``OSError`` numbers of I/O that may succeed when tried again (network filesystems, NFS)."""

_TRANSIENT_CLASSES: frozenset[str] = frozenset(
    {
        # botocore (s3fs, DVC remotes): connection and read timeouts, dropped connections
        "botocore.exceptions.EndpointConnectionError",
        "botocore.exceptions.ConnectTimeoutError",
        "botocore.exceptions.ReadTimeoutError",
        "botocore.exceptions.ConnectionClosedError",
        "botocore.exceptions.ConnectionError",
        "botocore.exceptions.HTTPClientError",
        # aiohttp (fsspec's HTTP and s3fs' async client)
        "aiohttp.client_exceptions.ClientConnectionError",
        "aiohttp.client_exceptions.ServerDisconnectedError",
        "aiohttp.client_exceptions.ClientPayloadError",
        # fsspec
        "fsspec.exceptions.FSTimeoutError",
    }
)
"""Exception classes (module.name, matched along the class hierarchy) of transient remote I/O."""


def is_transient(error: BaseException) -> bool:
    """True if ``error`` (or an error it was raised from) is I/O that may pass when retried.

    ``ConnectionError``, ``TimeoutError``, an ``OSError`` with an errno of
    :data:`TRANSIENT_ERRNOS`, or a known transient error of botocore, aiohttp or fsspec. Never a
    parse or decode error, never disk-full, permissions or a missing file.

    Examples
    --------
    >>> is_transient(OSError(errno.EIO, "Input/output error"))
    True
    >>> is_transient(OSError(errno.ENOSPC, "No space left on device"))
    False
    >>> is_transient(RecursionError("maximum recursion depth exceeded"))
    False
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ConnectionError, TimeoutError)):
            return True
        if isinstance(current, OSError) and current.errno in TRANSIENT_ERRNOS:
            return True
        names = {f"{c.__module__}.{c.__name__}" for c in type(current).__mro__}
        if names & _TRANSIENT_CLASSES:
            return True
        current = current.__cause__
    return False


OUTPUT_ERRNOS: frozenset[int] = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
"""``OSError`` numbers that say the build's own outputs cannot be written: not the case's fault."""


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def output_trouble(error: BaseException) -> OSError | None:
    """The disk-full, quota or read-only ``OSError`` behind ``error``, if there is one."""
    for e in _chain(error):
        if isinstance(e, OSError) and e.errno in OUTPUT_ERRNOS:
            return e
    return None


def output_error(error: OSError, where: Path) -> OutputError:
    """One line naming the path that could not be written (``where`` if the error names none).

    Examples
    --------
    >>> str(output_error(OSError(errno.ENOSPC, "No space left on device"), Path("/b")))
    '/b: cannot write (No space left on device); free space on that disk or build elsewhere'
    """
    path = error.filename or where
    return OutputError(
        f"{path}: cannot write ({error.strerror or error}); free space on that disk or build "
        "elsewhere"
    )


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, at most ``limit`` characters (a reason column stays readable).

    Examples
    --------
    >>> one_line("line one\\n  line two")
    'line one line two'
    """
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


_CHECKS: dict[type[BaseException], str] = {
    RecursionError: "too_deep",
    MemoryError: "too_large",
    OverflowError: "value_overflow",
}


def unexpected(path: Path | str | object, error: BaseException, doing: str) -> InputError:
    """An :class:`InputError` naming ``path`` for an error no reader anticipated.

    The check is ``too_deep`` (RecursionError), ``too_large`` (MemoryError), ``value_overflow``
    (OverflowError) or ``unexpected_error``; the reason names the exception in one line.
    """
    check = next((c for t, c in _CHECKS.items() if isinstance(error, t)), "unexpected_error")
    return InputError(
        path,
        f"{doing} failed ({type(error).__name__}: {one_line(str(error), 200)})",
        "the file is damaged or not what its name says; replace or remove it",
        check=check,
    )


@contextmanager
def blame(path: Path | str | object, doing: str = "reading the file") -> Iterator[None]:
    """Turn any unanticipated error inside the block into an :class:`InputError` naming ``path``.

    :class:`InputError` passes unchanged; transient I/O (:func:`is_transient`), ``KeyboardInterrupt``
    and ``SystemExit`` pass through so that they can be retried or stop the build.
    """
    try:
        yield
    except VerseEtlError:
        raise
    except Exception as e:
        if is_transient(e) or output_trouble(e):
            raise
        raise unexpected(path, e, doing) from e
