"""Exceptions raised by verse-etl.

Every message reads ``"<path>: <what is wrong> (expected X, got Y); <what to do>"`` so that a
quarantine row or a log line is enough to find and fix the input.
"""

from __future__ import annotations

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
        The file (or folder) at fault.
    problem
        What is wrong, with expected and found values where they exist.
    fix
        What the user can do about it.
    check
        A short machine-readable name of the failed check (goes to ``quarantine.check``).
    """

    def __init__(self, path: Path | str, problem: str, fix: str = "", check: str = "read") -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        self.check = check
        message = f"{self.path}: {problem}"
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
