"""Discovery of MosMed CTLungCa-500 studies and their vertebral-fracture annotation files.

Layout (see ``shared/specs/MOSMED.md`` §1.4, §3.2)::

    <root>/dicom/<Folder>/<any nested dirs>/<any file names>   DICOM files of one study
    <root>/dicom/<Folder>.tar.gz                               the same, packed (newer distribution)
    <root>/<annotation dir>/<Folder>.json                      keypoint annotation, v1 or v2

The annotation folders are named in ``params.yaml: mosmed.annotation_dirs`` (default
``annotation`` and ``annotation_v2``); a file's release is read from its content. A study is
matched to its annotations by the Folder name, the series inside it by the exact
SeriesInstanceUID string (trailing '.' included).

**Older identifiers.** The first v1 release used Folder and SeriesInstanceUID values of an older
dataset version (MOSMED.md §1.4). A mapping CSV (``mosmed.id_mapping``) with the columns
``old_folder,old_series_uid,folder,series_uid`` lets such files match the current studies; which
identifiers matched is recorded in the ``mosmed_vertebrae`` table (``id_match``).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from verse_etl.errors import InputError
from verse_etl.io.archives import archive_stem
from verse_etl.io.files import special_file_error

MAPPING_COLUMNS: tuple[str, ...] = ("old_folder", "old_series_uid", "folder", "series_uid")
"""Header of the identifier mapping CSV: older Folder and SeriesInstanceUID -> current ones."""


@dataclass(frozen=True)
class IdMapping:
    """One row of the identifier mapping: an older study identity and the current one."""

    old_folder: str
    old_series_uid: str
    folder: str
    series_uid: str


@dataclass(frozen=True)
class MosmedStudy:
    """One study: its DICOM files (folder and/or archive) and every annotation file naming it.

    ``dicom_dir`` wins over ``archive`` when both exist (the archive is reported as unused).
    ``id_mappings`` holds the mapping rows that lead to this study.
    """

    folder: str
    dicom_dir: Path | None = None
    archive: Path | None = None
    annotations: tuple[Path, ...] = ()
    id_mappings: tuple[IdMapping, ...] = field(default=())

    @property
    def has_images(self) -> bool:
        """True if the study has a DICOM folder or archive."""
        return self.dicom_dir is not None or self.archive is not None


def read_id_mapping(path: Path) -> tuple[IdMapping, ...]:
    """Read the old -> current identifier mapping CSV.

    Raises
    ------
    InputError
        If the file is missing, lacks a column of :data:`MAPPING_COLUMNS`, has an empty value,
        or maps one old folder to two current ones.
    """
    special = special_file_error(path)
    if special is not None:  # a FIFO would block the build before it starts
        raise InputError(path, special.problem, special.fix, check="id_mapping")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in MAPPING_COLUMNS if c not in header]
            if missing:
                raise InputError(
                    path,
                    f"identifier mapping lacks column(s) {missing} "
                    f"(expected a header {','.join(MAPPING_COLUMNS)}, got {','.join(header)})",
                    "fix the header",
                    check="id_mapping",
                )
            rows: list[IdMapping] = []
            for line, raw in enumerate(reader, start=2):
                values = {k.strip(): (v or "").strip() for k, v in raw.items() if k}
                empty = [c for c in MAPPING_COLUMNS if not values.get(c)]
                if empty:
                    raise InputError(
                        path,
                        f"line {line}: empty {empty} (expected four identifiers per row)",
                        "fill in or remove the row",
                        check="id_mapping",
                    )
                rows.append(IdMapping(*(values[c] for c in MAPPING_COLUMNS)))
    except FileNotFoundError as e:
        raise InputError(
            path, "identifier mapping file not found", "check mosmed.id_mapping", check="id_mapping"
        ) from e
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(
            path, f"cannot read the identifier mapping ({e})", check="id_mapping"
        ) from e
    targets: dict[str, str] = {}
    for row in rows:
        if targets.setdefault(row.old_folder, row.folder) != row.folder:
            raise InputError(
                path,
                f"old folder {row.old_folder!r} maps to both {targets[row.old_folder]!r} and "
                f"{row.folder!r} (expected one current folder)",
                "fix the mapping",
                check="id_mapping",
            )
    return tuple(rows)


def discover_mosmed(
    root: Path,
    annotation_dirs: Sequence[str] = ("annotation", "annotation_v2"),
    id_mappings: Sequence[IdMapping] = (),
) -> list[MosmedStudy]:
    """List every study under ``root/dicom`` and every annotation file naming one.

    A study folder without annotation and an annotation without study are both returned, so
    that the caller can convert the first and quarantine the second. An annotation file whose
    stem is an old folder name of ``id_mappings`` joins the current study.
    """
    dicom = root / "dicom"
    folders: dict[str, Path] = {}
    archives: dict[str, Path] = {}
    if dicom.is_dir():
        for path in sorted(dicom.iterdir()):
            if path.is_dir():
                folders[path.name] = path
            elif (
                path.is_file()
                and special_file_error(path) is None
                and (stem := archive_stem(path)) is not None
            ):
                archives[stem] = path
    to_current = {m.old_folder: m.folder for m in id_mappings}
    annotations: dict[str, list[Path]] = {}
    for name in annotation_dirs:
        directory = root / name
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.json")):
            if special_file_error(path) is not None:
                continue  # named by discovery_problems, never opened
            stem = path.stem
            if stem not in folders and stem not in archives and stem in to_current:
                stem = to_current[stem]
            annotations.setdefault(stem, []).append(path)
    studies = []
    for name in sorted(set(folders) | set(archives) | set(annotations)):
        stems = {name} | {p.stem for p in annotations.get(name, [])}
        studies.append(
            MosmedStudy(
                folder=name,
                dicom_dir=folders.get(name),
                archive=archives.get(name),
                annotations=tuple(annotations.get(name, [])),
                id_mappings=tuple(
                    m for m in id_mappings if m.folder == name or m.old_folder in stems
                ),
            )
        )
    return studies


def discovery_problems(
    root: Path, annotation_dirs: Sequence[str] = ("annotation", "annotation_v2")
) -> list[InputError]:
    """Files below the MosMed root that :func:`discover_mosmed` cannot place, one error each.

    Nothing is dropped silently: a study packed in another format (``.zip``), a stray file in
    ``dicom/``, a non-JSON file among the annotations, or a FIFO, socket, device or broken link
    in either place (``not_regular_file``, never opened) is reported instead of ignored.
    """
    problems = []
    dicom = root / "dicom"
    for path in sorted(dicom.iterdir()) if dicom.is_dir() else []:
        if (special := special_file_error(path)) is not None:
            problems.append(special)
        elif not path.is_dir() and archive_stem(path) is None:
            problems.append(
                InputError(
                    path,
                    "not a study (expected a folder or a .tar.gz/.tgz archive named after the "
                    "study)",
                    "unpack or repack it as dicom/<Folder>/ or dicom/<Folder>.tar.gz, or remove it",
                    check="study_unplaced",
                )
            )
    for name in annotation_dirs:
        directory = root / name
        for path in sorted(directory.iterdir()) if directory.is_dir() else []:
            if (special := special_file_error(path)) is not None:
                problems.append(special)
            elif path.suffix != ".json" or not path.is_file():
                problems.append(
                    InputError(
                        path,
                        "not an annotation file (expected <Folder>.json)",
                        "move it out of the annotation folder or rename it",
                        check="annotation_unplaced",
                    )
                )
    return problems
