"""Discovery of the VerSe release layouts: subject-based and MICCAI-challenge, in folders or zips.

Subject-based ("VerSe-complete", BIDS-like; ``shared/specs/VERSE.md`` §1-§2)::

    dataset-verse19training/rawdata/sub-verse004/sub-verse004_ct.nii.gz
    dataset-verse19training/rawdata/sub-verse004/sub-verse004_ct.json
    dataset-verse19training/derivatives/sub-verse004/sub-verse004_seg-vert_msk.nii.gz
    dataset-verse19training/derivatives/sub-verse004/sub-verse004_seg-subreg_ctd.json  (or seg-vb)
    dataset-01training/rawdata/sub-gl003/sub-gl003_dir-ax_ct.nii.gz            (VerSe'20)
    .../sub-verse401/sub-verse401_split-verse201_ct.nii.gz                      (multi-scan patient)

MICCAI-challenge (flat files, millimetre centroids)::

    verse004.nii.gz  verse004_seg.nii.gz  verse004_ctd.json                     (VerSe'19)
    GL003_CT-ax.nii.gz  GL003_CT-ax_seg.nii.gz  GL003_CT-ax_iso-ctd.json        (VerSe'20)
    verse401_verse201_CT-iso.nii.gz ...  GL124_CT_ax-iso-ctd.json (sic, misnamed in the release)

Both are found below a root at any depth (unzip tools add wrapper folders), in plain folders and
inside the release zips (``dataset-verse19training.zip``; ``dataset-verse20training.zip`` holds
``dataset-01training/``), which are read in place (:mod:`verse_etl.io.files`).

Release and split come from the nearest folder named like a release folder
(``dataset-verse19training``, ``dataset-02validation``, also the README's ``02_validation``), else
from the zip's name. Scan id = the ``split-`` value if present, else the subject (amid's
convention); patient id = the subject. MICCAI ids are lower-cased (``GL003`` -> ``gl003``) so that
the same scan matches across layouts; ``verse401_verse201`` is patient verse401, scan verse201.

A scan found more than once (VerSe'19 and VerSe'20 overlap; a folder beside its zip) is kept
once: subject-based before MICCAI, then VerSe'19 before VerSe'20 (the release the fracture grades
were read on), then path order. Every copy left out is returned so that it can be reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from verse_etl.errors import InputError
from verse_etl.io.files import SourceFile, list_files

RELEASE_DIR = re.compile(
    r"^dataset-(?:verse(?P<year>19|20)(?P<s1>training|validation|test)"
    r"|0(?P<n>[123])(?P<s2>training|validation|test))$"
    r"|^0(?P<n3>[123])_(?P<s3>training|validation|test)$"
)
SPLIT_DIR = RELEASE_DIR  # name kept for callers of the walking skeleton
FILE = re.compile(
    r"^sub-(?P<sub>(?:verse|gl)\d{3})"
    r"(?:_split-(?P<split>verse\d{3}))?"
    r"(?:_dir-(?P<dir>[a-z]+))?"
    r"_(?P<kind>ct\.nii\.gz|ct\.json|seg-vert_msk\.nii\.gz|seg-subreg_ctd\.json"
    r"|seg-vb_ctd\.json|seg-vert_snp\.png)$"
)
MICCAI_FILE = re.compile(
    r"^(?P<id>(?:GL|gl|verse)\d{3}(?:_verse\d{3})?)"
    r"(?:_CT[-_](?P<dir>[a-z]+))?"
    r"(?P<kind>\.nii\.gz|_seg\.nii\.gz|_ctd\.json|[-_]iso-ctd\.json|\.png|_ctd\.png)$"
)
"""MICCAI'19 and '20 file names, including the misnamed ``GL124_CT_ax-iso-ctd.json``."""

_SUBJECT_KINDS = {
    "ct.nii.gz": "ct",
    "ct.json": "sidecar",
    "seg-vert_msk.nii.gz": "mask",
    "seg-subreg_ctd.json": "centroids",
    "seg-vb_ctd.json": "centroids_vb",
    "seg-vert_snp.png": "snapshot",
}
_MICCAI_KINDS = {
    ".nii.gz": "ct",
    "_seg.nii.gz": "mask",
    "_ctd.json": "centroids19",
    "-iso-ctd.json": "centroids20",
    "_iso-ctd.json": "centroids20",
    ".png": "snapshot",
    "_ctd.png": "snapshot",
}
SPREADSHEET = re.compile(r"\.xlsx$", re.IGNORECASE)


@dataclass(frozen=True)
class VerseScan:
    """The files of one VerSe scan. Files absent from the release are None."""

    scan_id: str
    patient_id: str
    release: str  # "verse19" or "verse20"
    split: str | None  # "training", "validation", "test"; None if the layout does not say
    direction: str | None  # the dir- entity (ax, sag, iso) if present
    ct: SourceFile
    mask: SourceFile | None
    centroids: SourceFile | None
    sidecar: SourceFile | None
    snapshot: SourceFile | None
    layout: str = "subject"  # "subject" or "miccai"
    centroid_format: str = "subject"  # see verse_etl.verse.centroids.CENTROID_FORMATS
    other_copies: tuple[SourceFile, ...] = field(default=())  # CTs of copies left out

    @property
    def prefix(self) -> str:
        """The shared file-name prefix, e.g. ``sub-verse401_split-verse201``."""
        return self.ct.name.removesuffix(".nii.gz").removesuffix("_ct")

    @property
    def files(self) -> tuple[SourceFile, ...]:
        """The scan's input files (CT, mask, centroids, sidecar) that exist."""
        return tuple(f for f in (self.ct, self.mask, self.centroids, self.sidecar) if f)


@dataclass(frozen=True)
class VerseSources:
    """Everything found below a VerSe source root."""

    scans: tuple[VerseScan, ...]
    """One per scan id (duplicates resolved), sorted by scan id."""
    duplicates: tuple[tuple[VerseScan, VerseScan], ...]
    """``(left out, kept)`` for every copy of a scan that was not kept."""
    grade_tables: tuple[SourceFile, ...]
    """Spreadsheets that may be the VerSe'19 fracture grading table (``*.xlsx``)."""
    problems: tuple[InputError, ...]
    """Files that look like VerSe files but cannot be used (never dropped silently)."""


def release_split(name: str) -> tuple[str, str] | None:
    """Release and split of a release folder (or zip stem) name, or None.

    Examples
    --------
    >>> release_split("dataset-verse19validation"), release_split("dataset-03test")
    (('verse19', 'validation'), ('verse20', 'test'))
    >>> release_split("dataset-verse20training"), release_split("rawdata")
    (('verse20', 'training'), None)
    """
    m = RELEASE_DIR.match(name)
    if not m:
        return None
    if m["year"]:
        return f"verse{m['year']}", m["s1"]
    return "verse20", m["s2"] or m["s3"]


def _split_word(name: str) -> str | None:
    """Split named loosely by a folder of a MICCAI layout (``training_data``, ``test``...)."""
    low = name.lower()
    if "train" in low:
        return "training"
    if "valid" in low or "public" in low:
        return "validation"
    if "test" in low or "hidden" in low:
        return "test"
    return None


def _context(source: SourceFile, root: Path) -> list[str]:
    """Folder names around a file, nearest first: member folders, zip stem, folders to root."""
    names: list[str] = []
    if source.member is not None:
        names.extend(reversed(source.parts[:-1]))
        names.append(re.sub(r"\.zip$", "", source.path.name, flags=re.IGNORECASE))
    try:
        rel = source.path.resolve().relative_to(root.resolve()).parts[:-1]
    except ValueError:
        rel = ()
    names.extend(reversed(rel))
    return names


def _container(source: SourceFile) -> tuple[str, tuple[str, ...]]:
    """Where a file sits: (archive or '', folder parts) - files of one scan share a container."""
    if source.member is not None:
        return str(source.path), source.parts[:-1]
    return "", source.path.parts[:-1]


def discover_verse_sources(root: Path) -> VerseSources:
    """Find every scan of every VerSe layout below ``root`` (folders and zips), deduplicated.

    Parameters
    ----------
    root
        A folder holding release folders, release zips, MICCAI folders, or a mix, at any depth.

    Returns
    -------
    VerseSources
        Kept scans, copies left out, candidate fracture-grade spreadsheets and problems.
    """
    files, listing_problems = list_files(root)
    problems: list[InputError] = list(listing_problems)
    found: list[VerseScan] = []
    subject_groups: dict[tuple, dict[str, SourceFile]] = {}
    miccai_groups: dict[tuple, dict[str, SourceFile]] = {}
    grade_tables: list[SourceFile] = []
    for source in files:
        name = source.name
        if SPREADSHEET.search(name):
            grade_tables.append(source)
            continue
        m = FILE.match(name)
        if m:
            _add_subject_file(source, m, subject_groups, problems)
            continue
        m = MICCAI_FILE.match(name)
        if m:
            kind = _MICCAI_KINDS[m["kind"]]
            key = (_container(source), m["id"].lower(), m["dir"])
            _add_to_group(miccai_groups, key, kind, source, problems)
            continue
        if name.startswith("sub-") and name.endswith((".nii.gz", ".nii", ".json")):
            problems.append(
                InputError(
                    source,
                    "file name does not follow the VerSe naming (expected sub-<id>[_split-<id>]"
                    "[_dir-<d>]_<ct.nii.gz|ct.json|seg-vert_msk.nii.gz|seg-subreg_ctd.json>)",
                    "rename it to the release's naming or remove it",
                    check="unrecognised_file",
                )
            )
    for (_, _, prefix), group in sorted(subject_groups.items(), key=lambda kv: str(kv[0])):
        scan = _subject_scan(prefix, group, root, problems)
        if scan is not None:
            found.append(scan)
    for (_, scan_key, direction), group in sorted(miccai_groups.items(), key=lambda kv: str(kv[0])):
        scan = _miccai_scan(scan_key, direction, group, root, problems)
        if scan is not None:
            found.append(scan)
    kept, duplicates = dedupe_scans(found)
    return VerseSources(
        scans=tuple(sorted(kept, key=lambda s: s.scan_id)),
        duplicates=tuple(duplicates),
        grade_tables=tuple(grade_tables),
        problems=tuple(problems),
    )


def discover_verse(root: Path) -> list[VerseScan]:
    """Every scan found below ``root`` (see :func:`discover_verse_sources`), duplicates kept.

    Examples
    --------
    >>> discover_verse(Path("/nonexistent"))
    []
    """
    if not root.is_dir():
        return []
    sources = discover_verse_sources(root)
    scans = list(sources.scans) + [dropped for dropped, _ in sources.duplicates]
    return sorted(scans, key=_priority)


def _add_to_group(
    groups: dict[tuple, dict[str, SourceFile]],
    key: tuple,
    kind: str,
    source: SourceFile,
    problems: list[InputError],
) -> None:
    group = groups.setdefault(key, {})
    if kind in group:
        problems.append(
            InputError(
                source,
                f"a second {kind} file for the same scan (the first is {group[kind]})",
                "keep one copy",
                check="duplicate_file",
            )
        )
        return
    group[kind] = source


def _add_subject_file(
    source: SourceFile,
    m: re.Match[str],
    groups: dict[tuple, dict[str, SourceFile]],
    problems: list[InputError],
) -> None:
    archive, folders = _container(source)
    if folders and folders[-1] != f"sub-{m['sub']}":
        problems.append(
            InputError(
                source,
                f"file of subject {m['sub']} is in folder {folders[-1] if folders else '(root)'} "
                f"(expected sub-{m['sub']})",
                "move it into its subject folder",
                check="unrecognised_file",
            )
        )
        return
    # Files of one scan share the release root: the folders above rawdata/ or derivatives/ (or
    # the subject folder's parent when a copy puts all files of a subject in one folder).
    parents = folders[:-1]
    dataset = parents[:-1] if parents and parents[-1] in ("rawdata", "derivatives") else parents
    prefix = source.name[: source.name.rindex("_" + m["kind"])]
    kind = _SUBJECT_KINDS[m["kind"]]
    _add_to_group(groups, ((archive, dataset), m["sub"], prefix), kind, source, problems)


def _locate(source: SourceFile, root: Path) -> tuple[str, str] | None:
    for name in _context(source, root):
        found = release_split(name)
        if found:
            return found
    return None


def _subject_scan(
    prefix: str, group: dict[str, SourceFile], root: Path, problems: list[InputError]
) -> VerseScan | None:
    ct = group.get("ct")
    if ct is None:
        for source in group.values():
            problems.append(
                InputError(
                    source,
                    f"no CT ({prefix}_ct.nii.gz) beside this file",
                    "the release copy is incomplete; re-download it",
                    check="missing_ct",
                )
            )
        return None
    located = _locate(ct, root)
    if located is None:
        problems.append(
            InputError(
                ct,
                "cannot tell release and split (expected a folder or zip named like "
                "dataset-verse19training or dataset-01training above rawdata/)",
                "keep the release folder (or zip) name as published",
                check="release_unknown",
            )
        )
        return None
    m = FILE.match(ct.name)
    assert m is not None
    centroids = group.get("centroids") or group.get("centroids_vb")
    if group.get("centroids") and group.get("centroids_vb"):
        problems.append(
            InputError(
                group["centroids_vb"],
                "older seg-vb centroid file next to a seg-subreg one; the seg-subreg file is used",
                "remove the older file",
                check="duplicate_file",
            )
        )
    release, split = located
    return VerseScan(
        scan_id=m["split"] or m["sub"],
        patient_id=m["sub"],
        release=release,
        split=split,
        direction=m["dir"],
        ct=ct,
        mask=group.get("mask"),
        centroids=centroids,
        sidecar=group.get("sidecar"),
        snapshot=group.get("snapshot"),
    )


def _miccai_scan(
    scan_key: str,
    direction: str | None,
    group: dict[str, SourceFile],
    root: Path,
    problems: list[InputError],
) -> VerseScan | None:
    ct = group.get("ct")
    if ct is None:
        for source in group.values():
            problems.append(
                InputError(
                    source,
                    f"no CT image for MICCAI scan {scan_key} in this folder",
                    "the release copy is incomplete; re-download it",
                    check="missing_ct",
                )
            )
        return None
    if "centroids19" in group and "centroids20" in group:
        problems.append(
            InputError(
                group["centroids19"],
                "both a VerSe'19 (_ctd.json) and a VerSe'20 (_iso-ctd.json) centroid file; "
                "the VerSe'20 file is used",
                "keep one",
                check="duplicate_file",
            )
        )
    context = _context(ct, root)
    if "centroids20" in group:
        release = "verse20"
    elif "centroids19" in group:
        release = "verse19"
    elif scan_key.startswith("gl") or direction or "_" in scan_key:
        release = "verse20"  # names only the VerSe'20 MICCAI release uses
    else:
        # A plain verse### with no centroid file: a folder name may still say the year.
        years = [y for n in context for y in ("19", "20") if f"20{y}" in n or f"verse{y}" in n]
        release = f"verse{years[0]}" if years else "verse19"
    split = next((s for s in map(_split_word, context) if s), None)
    patient, _, series = scan_key.partition("_")
    centroids = group.get("centroids20") or group.get("centroids19")
    return VerseScan(
        scan_id=series or patient,
        patient_id=patient,
        release=release,
        split=split,
        direction=direction,
        ct=ct,
        mask=group.get("mask"),
        centroids=centroids,
        sidecar=None,
        snapshot=group.get("snapshot"),
        layout="miccai",
        centroid_format="miccai20" if "centroids20" in group else "miccai19",
    )


def _priority(scan: VerseScan) -> tuple:
    return (scan.layout != "subject", scan.release, str(scan.ct))


def dedupe_scans(
    scans: list[VerseScan],
) -> tuple[list[VerseScan], list[tuple[VerseScan, VerseScan]]]:
    """Keep one copy of each scan id; return the kept scans and ``(dropped, kept)`` pairs.

    The copy kept is the first by (subject-based before MICCAI, VerSe'19 before VerSe'20, path);
    it lists the CTs of the others in ``other_copies``. The caller records every dropped copy.
    """
    by_id: dict[str, list[VerseScan]] = {}
    for scan in sorted(scans, key=_priority):
        by_id.setdefault(scan.scan_id, []).append(scan)
    kept: list[VerseScan] = []
    dropped: list[tuple[VerseScan, VerseScan]] = []
    for copies in by_id.values():
        first = copies[0]
        if len(copies) > 1:
            first = _with_copies(first, tuple(c.ct for c in copies[1:]))
            dropped.extend((c, first) for c in copies[1:])
        kept.append(first)
    return kept, dropped


def _with_copies(scan: VerseScan, others: tuple[SourceFile, ...]) -> VerseScan:
    return replace(scan, other_copies=others)
