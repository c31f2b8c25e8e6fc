"""Dataset releases: a git tag on the commit holding ``dvc.lock``, with release notes.

A release pins every output of a finished build (DVC hashes in ``dvc.lock``) to a git tag, so a
consumer gets exactly that version with ``git checkout <tag> && dvc pull``. Its notes list the
scans and series added, changed and removed since the previous release, and how the quarantine
moved, computed from the tables of both versions (the previous ones read through DVC at the
previous tag), and the raw source files pinned as DVC URL imports (URL, ETag, md5, sha256), whose
``.dvc`` files go into the release commit.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from verse_etl.cases.records import write_text_atomic
from verse_etl.errors import VerseEtlError
from verse_etl.publish.remotes import consumer_commands, reachability_note
from verse_etl.sources.dvc_imports import ImportRecord, read_import
from verse_etl.tables.parquet import read_frame

# The tables whose rows are "the dataset" for release notes: the key of a row, and the tables
# whose rows belong to it (a scan changes when its row or any of its vertebrae change).
RELEASE_KEYS: dict[str, str] = {"scans": "scan_id", "series": "series_uid"}
CHILD_TABLES: dict[str, tuple[str, ...]] = {
    "scans": ("vertebrae",),
    "series": ("mosmed_vertebrae",),
}
RELEASE_TABLES = (*RELEASE_KEYS, *(c for cs in CHILD_TABLES.values() for c in cs), "quarantine")
NOTES_DIR = "releases"


class ReleaseError(VerseEtlError):
    """The workspace cannot be released as it is."""

    exit_code = 1


@dataclass(frozen=True)
class TableChanges:
    """Keys added, changed (any column differs) and removed in one table."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class RawSource:
    """A raw source file the release was built from, as its DVC import pins it."""

    path: str  # relative to the repository
    url: str
    etag: str | None
    size: int | None
    md5: str | None
    sha256: str | None


@dataclass(frozen=True)
class ReleaseNotes:
    """What changed between two releases."""

    tag: str
    previous: str | None
    tables: dict[str, TableChanges] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    quarantine: dict[str, tuple[int, int]] = field(default_factory=dict)  # check -> (before, now)
    reachability: str = ""  # who can pull from the default remote (remotes.reachability_note)
    commands: tuple[str, ...] = ()  # how to get it from elsewhere (remotes.consumer_commands)
    sources: tuple[RawSource, ...] = ()  # the raw source files pinned as DVC URL imports

    def to_markdown(self) -> str:
        """The notes as Markdown (deterministic)."""
        since = f"since {self.previous}" if self.previous else "(first release)"
        lines = [f"# Release {self.tag}", "", f"Changes {since}.", ""]
        lines += ["| table | rows |", "|---|---:|"]
        lines += [f"| {name} | {n} |" for name, n in sorted(self.rows.items())]
        for name, changes in sorted(self.tables.items()):
            lines += ["", f"## {name}", ""]
            for label, keys in (
                ("added", changes.added),
                ("changed", changes.changed),
                ("removed", changes.removed),
            ):
                shown = ", ".join(keys) if keys else "none"
                lines.append(f"- {label} ({len(keys)}): {shown}")
        lines += [
            "",
            "## quarantine",
            "",
            "| check | before | now | change |",
            "|---|---:|---:|---:|",
        ]
        total_before = sum(b for b, _ in self.quarantine.values())
        total_now = sum(n for _, n in self.quarantine.values())
        for check, (before, now) in sorted(self.quarantine.items()):
            lines.append(f"| {check} | {before} | {now} | {now - before:+d} |")
        lines.append(
            f"| **total** | {total_before} | {total_now} | {total_now - total_before:+d} |"
        )
        if self.commands:
            lines += ["", "## Get this release", "", self.reachability, "", "```bash"]
            lines += [*self.commands, "```"]
        if self.sources:
            lines += [
                "",
                "## raw sources",
                "",
                "Pinned as DVC URL imports (`<path>.dvc`); `verse-etl fetch` restores and "
                "verifies them.",
                "",
                "| file | URL | ETag | bytes | md5 | sha256 |",
                "|---|---|---|---:|---|---|",
            ]
            for r in self.sources:
                lines.append(
                    f"| {r.path} | {r.url} | {r.etag or ''} | {r.size or ''} | {r.md5 or ''} "
                    f"| {r.sha256 or ''} |"
                )
        return "\n".join(lines) + "\n"


def compare_tables(
    previous: dict[str, pd.DataFrame] | None, current: dict[str, pd.DataFrame]
) -> tuple[dict[str, TableChanges], dict[str, tuple[int, int]]]:
    """Row changes of the release tables and quarantine counts per check, previous vs current."""
    changes: dict[str, TableChanges] = {}
    for name, key in RELEASE_KEYS.items():
        now = _identities(current, name, key)
        before = _identities(previous or {}, name, key)
        changes[name] = TableChanges(
            added=tuple(sorted(set(now) - set(before))),
            changed=tuple(sorted(k for k in set(now) & set(before) if now[k] != before[k])),
            removed=tuple(sorted(set(before) - set(now))),
        )
    q_now = _checks(current.get("quarantine"))
    q_before = _checks((previous or {}).get("quarantine"))
    quarantine = {
        c: (q_before.get(c, 0), q_now.get(c, 0)) for c in sorted(set(q_now) | set(q_before))
    }
    return changes, quarantine


def _identities(tables: dict[str, pd.DataFrame], name: str, key: str) -> dict[str, str]:
    """Key -> the JSON of its row and of its child rows: any difference makes it "changed"."""
    df = tables.get(name)
    if df is None or df.empty:
        return {}
    identity = dict(zip(df[key].astype(str), _json_rows(df), strict=True))
    for child in CHILD_TABLES.get(name, ()):
        rows = tables.get(child)
        if rows is None or rows.empty:
            continue
        for k, text in sorted(zip(rows[key].astype(str), _json_rows(rows), strict=True)):
            if k in identity:
                identity[k] += "\n" + text
    return identity


def _json_rows(df: pd.DataFrame) -> list[str]:
    # Where a store lies is not what it holds: its name carries the case key (code, params),
    # while its voxels are compared through their digest column.
    content = df.drop(columns=["store_path"], errors="ignore")
    return content.to_json(orient="records", lines=True).splitlines()


def _checks(df: pd.DataFrame | None) -> dict[str, int]:
    if df is None or df.empty:
        return {}
    # Releases made before the column was renamed (``check`` is a reserved word in SQL) say check.
    return dict(Counter(df["check_name" if "check_name" in df.columns else "check"]))


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ReleaseError(f"{repo}: git {' '.join(args)} failed ({proc.stderr.strip()})")
    return proc.stdout.strip()


def pinned_sources(repo: Path) -> list[ImportRecord]:
    """The URL imports of the repository (``.dvc`` files git tracks or would track)."""
    listed = _git(repo, "ls-files", "--cached", "--others", "--exclude-standard", "--", "*.dvc")
    records = (read_import(repo / name) for name in sorted(set(listed.splitlines())))
    return [r for r in records if r is not None]


def previous_release(repo: Path) -> str | None:
    """The nearest release tag reachable from HEAD, or None before the first release."""
    proc = subprocess.run(
        ["git", "describe", "--tags", "--abbrev=0"], cwd=repo, capture_output=True, text=True
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def read_tables(out: Path) -> dict[str, pd.DataFrame]:
    """The release tables of the workspace build at ``out``."""
    # Nullable dtypes: an int64 column read with numpy dtypes turns float as soon as one row
    # holds a null, and every row of it would then look "changed" between two releases.
    return {name: read_frame(out, name) for name in RELEASE_TABLES}


def read_tables_at(repo: Path, rev: str, out: str) -> dict[str, pd.DataFrame]:
    """The release tables as of git revision ``rev``, read through DVC (cache, else remote)."""
    from dvc.api import DVCFileSystem

    fs = DVCFileSystem(str(repo), rev=rev)
    return {name: read_frame(out, name, filesystem=fs) for name in RELEASE_TABLES}


def release(repo: Path, tag: str, out: str) -> ReleaseNotes:
    """Tag the current build as dataset version ``tag`` and write its release notes.

    The build must be up to date (``dvc status`` clean). Commits ``dvc.lock``, ``dvc.yaml``,
    ``params.yaml`` and ``releases/<tag>.md``, then creates an annotated tag.

    Raises
    ------
    ReleaseError
        If the tag exists, the build is not up to date, or git refuses.
    """
    from dvc.repo import Repo

    if _git(repo, "tag", "--list", tag):
        raise ReleaseError(
            f"{repo}: tag {tag} already exists (expected a new tag); pick another name"
        )
    status = Repo(str(repo)).status()
    if status:
        raise ReleaseError(
            f"{repo}: the build is not up to date (dvc status lists {sorted(status)}); "
            "run `dvc repro` first"
        )
    previous = previous_release(repo)
    current = read_tables(repo / out)
    before = read_tables_at(repo, previous, out) if previous else None
    changes, quarantine = compare_tables(before, current)
    rows = {name: len(current[name]) for name in (*RELEASE_KEYS, "quarantine")}
    imports = pinned_sources(repo)
    top = repo.resolve()
    sources = tuple(
        RawSource(r.path.relative_to(top).as_posix(), r.url, r.etag, r.size, r.md5, r.sha256)
        for r in imports
    )
    notes = ReleaseNotes(
        tag=tag,
        previous=previous,
        tables=changes,
        rows=rows,
        quarantine=quarantine,
        reachability=reachability_note(repo),
        commands=tuple(consumer_commands(repo, tag, out)),
        sources=sources,
    )
    notes_path = repo / NOTES_DIR / f"{tag}.md"
    write_text_atomic(notes_path, notes.to_markdown())
    # The pins go into the release commit with dvc.lock: the tag names the raw bytes too.
    pins = [str(r.dvc_file.relative_to(repo)) for r in imports]
    pins += sorted({str(r.dvc_file.parent.relative_to(repo) / ".gitignore") for r in imports})
    _git(
        repo, "add", "dvc.lock", "dvc.yaml", "params.yaml", str(notes_path.relative_to(repo)), *pins
    )
    _git(repo, "commit", "--quiet", "--allow-empty", "-m", f"Release {tag}")
    _git(repo, "tag", "-a", tag, "-m", f"verse-etl dataset release {tag}")
    return notes
