"""`verse-etl fetch`: the catalog's public sources, fetched into the layout the build reads,
each pinned as a DVC URL import, and checked for upstream changes without downloading.

Layout below the fetch root (``params.yaml: fetch.root``, default ``raw``)::

    raw/verse/dataset-verse19training.zip (+ .dvc) ...   the VerSe source root (sources.verse)
    raw/verse/ryai190138_appendixe1.xlsx (+ .dvc)
    raw/archives/<repo>-<commit>.zip (+ .dvc)            MosMed annotation releases as published
    raw/mosmed/annotation/, annotation_v2/               their members (the MosMed source root)
    raw/mosmed/folder_uid_mapping_v1_to_v2.csv           derived identifier mapping
    raw/mosmed/dicom/<Folder>/                           placed by hand (see mosmed_images)
    raw/.partial/                                        downloads in progress

A file already pinned is verified against its ``.dvc`` (md5, and the sha256 in its meta) on every
later fetch; a file present but not yet pinned (downloaded by hand) is adopted: hashed, checked
against the catalog's sha256 when it has one, and pinned with the server's current ETag and size
(a size that differs is refused).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from verse_etl.errors import InputError, ParamsError
from verse_etl.sources.catalog import ENTRIES, ID_MAPPING, SourceEntry, resolve_url
from verse_etl.sources.download import Download, fetch, file_digests
from verse_etl.sources.dvc_imports import ImportRecord, Imports, dvc_file_of, read_import
from verse_etl.sources.mosmed import MAPPING_COLUMNS

PARTIAL_DIR = ".partial"
_MEMBER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*\.json$")


@dataclass(frozen=True)
class SourceState:
    """One catalog entry as found locally (for ``fetch --list``)."""

    entry: SourceEntry
    path: Path
    present: bool
    record: ImportRecord | None


@dataclass(frozen=True)
class FetchOutcome:
    """What `fetch` did for one entry (or derived file)."""

    name: str
    path: Path
    action: str  # present | fetched | resumed | adopted | unpacked | derived | failed
    detail: str = ""
    error: InputError | None = None


def entry_path(root: Path, entry: SourceEntry) -> Path:
    """Where an entry's file goes below the fetch root.

    Raises
    ------
    ParamsError
        If the catalog's destination would lead outside the fetch root.
    """
    path = root / entry.dest
    if not path.resolve().is_relative_to(root.resolve()) or ".." in Path(entry.dest).parts:
        raise ParamsError(
            f"catalog entry {entry.name}: destination {entry.dest!r} is outside the fetch root "
            f"{root} (expected a relative path below it); fix the catalog"
        )
    return path


def list_sources(root: Path, entries: Sequence[SourceEntry] = ENTRIES) -> list[SourceState]:
    """Each entry, whether its file is present and what its ``.dvc`` file pins (no network)."""
    states = []
    for entry in entries:
        path = entry_path(root, entry)
        states.append(SourceState(entry, path, path.is_file(), read_import(dvc_file_of(path))))
    return states


def fetch_sources(
    project: Path,
    root: Path,
    entries: Sequence[SourceEntry],
    base_url: str = "",
    timeout: float = 60.0,
) -> list[FetchOutcome]:
    """Fetch what is missing of ``entries``, pin it, unpack archives and derive the mapping.

    Every entry is tried: one that fails is reported (``action="failed"``) and the others go on.
    """
    outcomes: list[FetchOutcome] = []
    imports = Imports(project)
    try:
        for entry in entries:
            path = entry_path(root, entry)
            try:
                outcomes.append(_fetch_one(imports, root, entry, path, base_url, timeout))
                if entry.unpack is not None:
                    outcomes.append(_unpack(entry, path, root))
            except InputError as e:
                outcomes.append(FetchOutcome(entry.name, path, "failed", str(e), e))
    finally:
        imports.close()
    # The mapping needs both v1 commits: derived when both were asked for, or are here already.
    asked = {e.name for e in entries}
    by_name = {e.name: e for e in ENTRIES}
    inputs = [(n in asked, entry_path(root, by_name[n]).is_file()) for n in ID_MAPPING.inputs]
    if any(a for a, _ in inputs) and all(a or here for a, here in inputs):
        outcomes.append(_derive_mapping(root))
    return outcomes


def _fetch_one(
    imports: Imports, root: Path, entry: SourceEntry, path: Path, base_url: str, timeout: float
) -> FetchOutcome:
    record = read_import(dvc_file_of(path))
    url = resolve_url(entry.url, base_url)
    if record is not None and record.md5 and imports.workspace_matches(record):
        return FetchOutcome(entry.name, path, "present", f"md5 {record.md5} verified by DVC")
    sha256 = (record.sha256 if record else None) or entry.sha256
    md5 = record.md5 if record else None
    if record is None and path.is_file():
        got_sha, got_md5 = file_digests(path)
        if sha256 is not None and got_sha != sha256:
            raise InputError(
                path,
                f"sha256 mismatch (expected {sha256} from the catalog, got {got_sha})",
                "delete it and run verse-etl fetch to download it again",
                check="download_digest",
            )
        pinned = imports.pin(path, url, None, got_sha, got_md5, entry.name)
        return FetchOutcome(
            entry.name, path, "adopted", f"local file pinned to {url} (ETag {pinned.etag})"
        )
    partial = root / PARTIAL_DIR / Path(entry.dest).name
    try:
        result = fetch(Download(url, path, sha256, md5, part=partial), timeout=timeout)
    except InputError as e:
        if e.check != "download" or not entry.mirrors:
            raise
        raise InputError(
            e.path,
            e.problem,
            f"{e.fix}; other published copies: {'; '.join(entry.mirrors)}",
            e.check,
        ) from e
    imports.pin(path, url, result.etag, result.sha256, result.md5, entry.name)
    verified = "verified" if (sha256 or md5) else "recorded"
    action = "resumed" if result.resumed_from else "fetched"
    return FetchOutcome(
        entry.name,
        path,
        action,
        f"{result.size} bytes, sha256 {result.sha256} {verified}"
        + (f", resumed at byte {result.resumed_from}" if result.resumed_from else ""),
    )


def archive_members(archive: Path, member_dir: str) -> dict[str, bytes]:
    """The ``<top>/<member_dir>/<name>.json`` members of a source archive, by file name.

    Raises
    ------
    InputError
        If the archive is unreadable, or a member's name is not a plain file name.
    """
    members: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                parts = info.filename.split("/")
                if info.is_dir() or len(parts) != 3 or parts[1] != member_dir:
                    continue
                if not _MEMBER_NAME.match(parts[2]):
                    raise InputError(
                        archive,
                        f"member {info.filename!r} is not a plain <Folder>.json file name",
                        "check the archive's origin",
                        check="archive_member",
                    )
                members[parts[2]] = zf.read(info)
    except (OSError, zipfile.BadZipFile) as e:
        raise InputError(archive, f"not a readable zip ({e})", "fetch it again", "read") from e
    if not members:
        raise InputError(
            archive,
            f"no {member_dir}/*.json members (expected the annotation folder of the release)",
            "check the catalog entry's commit",
            check="archive_member",
        )
    return members


def _unpack(entry: SourceEntry, archive: Path, root: Path) -> FetchOutcome:
    assert entry.unpack is not None
    dest = root / entry.unpack.dest
    members = archive_members(archive, entry.unpack.member_dir)
    current = {p.name: p for p in dest.glob("*.json")} if dest.is_dir() else {}
    if set(current) == set(members) and all(
        current[n].read_bytes() == data for n, data in members.items()
    ):
        return FetchOutcome(f"{entry.name} (unpacked)", dest, "present", f"{len(members)} files")
    extra = sorted(set(current) - set(members))
    if extra:
        raise InputError(
            dest,
            f"holds {len(extra)} file(s) the release does not have (e.g. {extra[0]})",
            "move them elsewhere (the folder is the release's), then fetch again",
            check="archive_member",
        )
    # Written beside the folder and renamed into place: the build never sees half a release.
    staging = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, data in sorted(members.items()):
        (staging / name).write_bytes(data)
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(staging, dest)
        shutil.rmtree(old)
    else:
        os.replace(staging, dest)
    return FetchOutcome(f"{entry.name} (unpacked)", dest, "unpacked", f"{len(members)} files")


def derive_id_mapping(old: dict[str, bytes], new: dict[str, bytes], source: Path) -> str:
    """The mapping CSV (:data:`MAPPING_COLUMNS`) pairing old and new annotation files whose
    keypoints are identical (MOSMED.md §1.4: only Folder and SeriesInstanceUID changed).

    Raises
    ------
    InputError
        If a file has no exact partner, or two share the same keypoints.
    """

    def index(files: dict[str, bytes]) -> dict[str, tuple[str, str]]:
        by_points: dict[str, tuple[str, str]] = {}
        for name, data in sorted(files.items()):
            doc = json.loads(data.decode("utf-8-sig"))
            key = json.dumps(doc["Annotation"], sort_keys=True)
            if key in by_points:
                raise InputError(
                    source, f"{name} and another file have identical keypoints", check="id_mapping"
                )
            by_points[key] = (str(doc["Folder"]), str(doc["SeriesInstanceUID"]))
        return by_points

    try:
        before, after = index(old), index(new)
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(source, f"annotation not readable ({e})", check="id_mapping") from e
    unpaired = len(set(before) ^ set(after))
    if unpaired:
        raise InputError(
            source,
            f"{unpaired} annotation file(s) without an identical partner in the other commit "
            "(expected the same keypoints under new identifiers)",
            "check the catalog's commits",
            check="id_mapping",
        )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(MAPPING_COLUMNS)
    for key in sorted(before, key=lambda k: before[k]):
        writer.writerow([*before[key], *after[key]])
    return out.getvalue()


def _derive_mapping(root: Path) -> FetchOutcome:
    dest = root / ID_MAPPING.dest
    by_name = {e.name: e for e in ENTRIES}
    old_entry, new_entry = (by_name[n] for n in ID_MAPPING.inputs)
    archives = [entry_path(root, e) for e in (old_entry, new_entry)]
    missing = [a for a in archives if not a.is_file()]
    if missing:
        error = InputError(
            dest,
            f"needs {missing[0]}",
            f"fetch {old_entry.name} and {new_entry.name}",
            "id_mapping",
        )
        return FetchOutcome(ID_MAPPING.name, dest, "failed", str(error), error)
    try:
        text = derive_id_mapping(
            archive_members(archives[0], "annotation"),
            archive_members(archives[1], "annotation"),
            archives[0],
        )
    except InputError as e:
        return FetchOutcome(ID_MAPPING.name, dest, "failed", str(e), e)
    rows = text.count("\n") - 1
    if dest.is_file() and dest.read_text(encoding="utf-8") == text:
        return FetchOutcome(ID_MAPPING.name, dest, "present", f"{rows} studies")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, dest)
    return FetchOutcome(ID_MAPPING.name, dest, "derived", f"{rows} studies")


@dataclass(frozen=True)
class UpstreamCheck:
    """One pinned source compared with its URL now (``fetch --check``)."""

    name: str
    path: Path
    url: str
    pinned_etag: str | None
    upstream_etag: str | None
    status: str  # unchanged | changed | not fetched | unreachable (...)


def check_upstream(
    project: Path, root: Path, entries: Sequence[SourceEntry]
) -> list[UpstreamCheck]:
    """Compare every pinned entry's ETag with its URL's now, without downloading."""
    pinned: list[ImportRecord] = []
    checks: list[UpstreamCheck] = []
    for state in list_sources(root, entries):
        if state.record is None:
            checks.append(
                UpstreamCheck(
                    state.entry.name, state.path, state.entry.url, None, None, "not fetched"
                )
            )
        else:
            pinned.append(state.record)
    if pinned:
        names = {s.record.dvc_file: s.entry.name for s in list_sources(root, entries) if s.record}
        imports = Imports(project)
        try:
            for record, now, status in imports.upstream_changes(pinned):
                checks.append(
                    UpstreamCheck(
                        names[record.dvc_file], record.path, record.url, record.etag, now, status
                    )
                )
        finally:
            imports.close()
    order = {e.name: i for i, e in enumerate(entries)}
    return sorted(checks, key=lambda c: order[c.name])


def _size(n: int | None) -> str:
    return "size unknown" if n is None else f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n} bytes"


def render_list(root: Path, entries: Sequence[SourceEntry]) -> str:
    """``fetch --list``: each entry, its address, where it goes and what is here (no network)."""
    lines = []
    for state in list_sources(root, entries):
        e, record = state.entry, state.record
        if record is not None and state.present:
            here = f"present, pinned: {record.size} bytes, md5 {record.md5}, ETag {record.etag}"
        elif record is not None:
            here = f"missing (pinned md5 {record.md5}: fetch restores and verifies it)"
        else:
            here = "present, not pinned (fetch adopts it)" if state.present else "missing"
        digest = f"sha256 {e.sha256}" if e.sha256 else "digest unknown until first fetch"
        lines.append(f"{e.name} [{e.group}]: {e.description}")
        lines.append(f"    {e.url}{'' if e.url_verified else '  (address unverified)'}")
        lines.append(f"    -> {state.path}  ({_size(e.size)}, {digest}; {e.licence})")
        if e.unpack is not None:
            lines.append(f"    members {e.unpack.member_dir}/*.json -> {root / e.unpack.dest}")
        for mirror in e.mirrors:
            lines.append(f"    mirror: {mirror}")
        if e.note:
            lines.append(f"    note: {e.note}")
        lines.append(f"    {here}")
    lines.append(
        f"{ID_MAPPING.name} [{ID_MAPPING.group}]: {ID_MAPPING.description}\n"
        f"    derived from {', '.join(ID_MAPPING.inputs)} -> {root / ID_MAPPING.dest}  "
        f"({'present' if (root / ID_MAPPING.dest).is_file() else 'missing'})"
    )
    from verse_etl.sources.catalog import MOSMED_IMAGES

    lines.append(
        f"{MOSMED_IMAGES.name} [manual]: {MOSMED_IMAGES.description}\n"
        f"    {MOSMED_IMAGES.url}\n    -> {root / MOSMED_IMAGES.dest}  "
        "(check with `verse-etl fetch --mosmed-images`)"
    )
    return "\n".join(lines)


def render_outcomes(outcomes: Sequence[FetchOutcome]) -> str:
    """What a fetch did, one line per entry, and a closing line (says when nothing was fetched)."""
    lines = [
        f"{o.name}: {o.action} {o.path}" + (f" ({o.detail})" if o.detail else "") for o in outcomes
    ]
    failed = sum(o.action == "failed" for o in outcomes)
    changed = [o for o in outcomes if o.action not in ("present", "failed")]
    if failed:
        lines.append(f"{failed} of {len(outcomes)} failed; run the same command again to retry")
    elif not changed:
        lines.append(f"nothing to fetch: all {len(outcomes)} present and verified")
    else:
        lines.append(
            f"{len(changed)} fetched or updated; commit the pins (.dvc files): "
            "git add raw && git commit -m 'Pin raw sources'"
        )
    return "\n".join(lines)


def render_checks(checks: Sequence[UpstreamCheck]) -> str:
    """``fetch --check``: each pinned source against its URL now."""
    lines = []
    for c in checks:
        line = f"{c.name}: {c.status}"
        if c.status == "changed":
            line += (
                f" (pinned ETag {c.pinned_etag}, upstream now {c.upstream_etag}); to accept the "
                f"new bytes: dvc update {dvc_file_of(c.path)} (or, resumable for a large file, "
                f"delete it and its .dvc file and fetch it again)"
            )
        elif c.status == "unchanged":
            line += f" (ETag {c.pinned_etag})"
        lines.append(line)
    n = sum(c.status == "changed" for c in checks)
    lines.append(f"{n} upstream change(s)" if n else "no upstream change")
    return "\n".join(lines)
