"""Discovery of the VerSe subject-based ("VerSe-complete", BIDS-like) release layouts.

Layout (see ``shared/specs/VERSE.md`` §1-§2)::

    dataset-verse19training/rawdata/sub-verse004/sub-verse004_ct.nii.gz
    dataset-verse19training/rawdata/sub-verse004/sub-verse004_ct.json
    dataset-verse19training/derivatives/sub-verse004/sub-verse004_seg-vert_msk.nii.gz
    dataset-verse19training/derivatives/sub-verse004/sub-verse004_seg-subreg_ctd.json
    dataset-01training/rawdata/sub-gl003/sub-gl003_dir-ax_ct.nii.gz            (VerSe'20)
    .../sub-verse401/sub-verse401_split-verse201_ct.nii.gz                      (multi-scan patient)

Scan id = the ``split-`` value if present, else the subject (amid's convention); patient id =
the subject.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SPLIT_DIR = re.compile(
    r"^dataset-(?:verse(?P<year>19|20)(?P<s1>training|validation|test)"
    r"|0(?P<n>[123])(?P<s2>training|validation|test))$"
)
FILE = re.compile(
    r"^sub-(?P<sub>(?:verse|gl)\d{3})"
    r"(?:_split-(?P<split>verse\d{3}))?"
    r"(?:_dir-(?P<dir>[a-z]+))?"
    r"_(?P<kind>ct\.nii\.gz|ct\.json|seg-vert_msk\.nii\.gz|seg-subreg_ctd\.json"
    r"|seg-vb_ctd\.json|seg-vert_snp\.png)$"
)


@dataclass(frozen=True)
class VerseScan:
    """The files of one VerSe scan. Paths absent from the release are None."""

    scan_id: str
    patient_id: str
    release: str  # "verse19" or "verse20"
    split: str  # "training", "validation" or "test"
    direction: str | None  # the dir- entity (ax, sag, iso) if present
    ct_path: Path
    mask_path: Path | None
    centroids_path: Path | None
    sidecar_path: Path | None
    snapshot_path: Path | None

    @property
    def prefix(self) -> str:
        """The shared file-name prefix, e.g. ``sub-verse401_split-verse201``."""
        return self.ct_path.name[: -len("_ct.nii.gz")]


def _release_split(folder: str) -> tuple[str, str] | None:
    m = SPLIT_DIR.match(folder)
    if not m:
        return None
    if m["year"]:
        return f"verse{m['year']}", m["s1"]
    return "verse20", m["s2"]


def discover_verse(root: Path) -> list[VerseScan]:
    """Find every scan of the subject-based layouts below ``root``, in a stable order.

    Works on a folder holding one or more ``dataset-*`` release folders, at any depth (some unzip
    tools add a wrapper folder). Files are matched by the release's own regexes; the derivatives
    of a scan are looked up beside its rawdata folder.
    """
    scans: list[VerseScan] = []
    for ct in sorted(root.rglob("rawdata/sub-*/*_ct.nii.gz")):
        m = FILE.match(ct.name)
        dataset = ct.parents[2]
        rs = _release_split(dataset.name)
        if not m or rs is None or ct.parent.name != f"sub-{m['sub']}":
            continue
        release, split = rs
        prefix = ct.name[: -len("_ct.nii.gz")]
        derivatives = dataset / "derivatives" / ct.parent.name
        centroids = derivatives / f"{prefix}_seg-subreg_ctd.json"
        if not centroids.exists():
            older = derivatives / f"{prefix}_seg-vb_ctd.json"
            centroids = older if older.exists() else centroids
        scans.append(
            VerseScan(
                scan_id=m["split"] or m["sub"],
                patient_id=m["sub"],
                release=release,
                split=split,
                direction=m["dir"],
                ct_path=ct,
                mask_path=_existing(derivatives / f"{prefix}_seg-vert_msk.nii.gz"),
                centroids_path=_existing(centroids),
                sidecar_path=_existing(ct.with_name(f"{prefix}_ct.json")),
                snapshot_path=_existing(derivatives / f"{prefix}_seg-vert_snp.png"),
            )
        )
    return scans


def _existing(path: Path) -> Path | None:
    return path if path.exists() else None


def dedupe_scans(
    scans: list[VerseScan],
) -> tuple[list[VerseScan], list[tuple[VerseScan, VerseScan]]]:
    """Keep one copy of each scan id; return the kept scans and ``(dropped, kept)`` pairs.

    The first copy in discovery order wins (VerSe'19 folders sort before VerSe'20 ones, so the
    original release is kept); the caller records every dropped copy.
    """
    kept: dict[str, VerseScan] = {}
    dropped: list[tuple[VerseScan, VerseScan]] = []
    for scan in scans:
        if scan.scan_id in kept:
            dropped.append((scan, kept[scan.scan_id]))
        else:
            kept[scan.scan_id] = scan
    return list(kept.values()), dropped
