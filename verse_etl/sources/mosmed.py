"""Discovery of MosMed CTLungCa-500 studies and their vertebral-fracture annotation files.

Layout (see ``shared/specs/MOSMED.md`` §1.4, §3.2)::

    <root>/dicom/<Folder>/<any nested dirs>/<any file names>   DICOM files of one study
    <root>/annotation/<Folder>.json                            keypoint annotation (v1)

A study is matched to its annotation by the Folder name; the series inside it by the exact
SeriesInstanceUID string (trailing '.' included).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MosmedStudy:
    """One study folder and, if present, its annotation file."""

    folder: str
    dicom_dir: Path | None
    annotation_path: Path | None


def discover_mosmed(root: Path) -> list[MosmedStudy]:
    """List every study under ``root/dicom`` and every annotation under ``root/annotation``.

    A study folder without annotation and an annotation without study folder are both returned,
    so that the caller can convert the first and quarantine the second.
    """
    dicom = root / "dicom"
    folders = {p.name: p for p in dicom.iterdir() if p.is_dir()} if dicom.is_dir() else {}
    annotation_dir = root / "annotation"
    annotations = (
        {p.stem: p for p in annotation_dir.glob("*.json")} if annotation_dir.is_dir() else {}
    )
    return [
        MosmedStudy(folder=name, dicom_dir=folders.get(name), annotation_path=annotations.get(name))
        for name in sorted(set(folders) | set(annotations))
    ]
