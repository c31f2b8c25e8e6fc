"""The DVC pipeline as a library: reproduce, push, and decide whether a build is a new version.

Thin wrappers over DVC's Python API so that scheduled builds run the exact same stages as
``dvc repro`` on the command line.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

from verse_etl.publish.release import previous_release


def reproduce(repo: Path) -> list[str]:
    """Run ``dvc repro`` in ``repo``; return the names of the stages that ran."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        stages = dvc.reproduce()
    return [stage.addressing for stage in stages]


def push(repo: Path, remote: str | None = None) -> int:
    """``dvc push`` to ``remote`` (the default remote if None); return the number of files sent."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        return int(dvc.push(remote=remote) or 0)


def lock_changed_since_release(repo: Path) -> bool:
    """True if ``dvc.lock`` differs from the one of the previous release (or there is none)."""
    previous = previous_release(repo)
    if previous is None:
        return True
    proc = subprocess.run(
        ["git", "show", f"{previous}:dvc.lock"], cwd=repo, capture_output=True, text=True
    )
    return proc.returncode != 0 or proc.stdout != (repo / "dvc.lock").read_text(encoding="utf-8")


def unchanged_release(repo: Path) -> str | None:
    """The previous release tag if nothing changed since it: the same ``dvc.lock`` and no commit
    after it (a commit, e.g. a new remote, is worth a release even with the same outputs)."""
    previous = previous_release(repo)
    if previous is None or lock_changed_since_release(repo):
        return None
    proc = subprocess.run(
        ["git", "rev-list", "--count", f"{previous}..HEAD"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    return previous if proc.returncode == 0 and proc.stdout.strip() == "0" else None


def release_tag(now: datetime | None = None) -> str:
    """A tag for a scheduled release, from the UTC time, e.g. ``v2026.11.23-0300``.

    Examples
    --------
    >>> release_tag(datetime(2026, 11, 23, 3, 0, tzinfo=UTC))
    'v2026.11.23-0300'
    """
    now = now or datetime.now(UTC)
    return f"v{now:%Y.%m.%d-%H%M}"
