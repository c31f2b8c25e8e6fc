"""The manual step of MosMed: checking the CTLungCa-500 studies the user placed.

The studies are distributed by mosmed.ai behind a request form, so `fetch` cannot download them.
What the build needs (``shared/specs/MOSMED.md`` §1.4, §3.2)::

    <mosmed root>/dicom/<Folder>/<any nested dirs>/<DICOM files, any names>
    <mosmed root>/dicom/<Folder>.tar.gz                  (the newer distribution, kept packed)

with ``<Folder>`` the study folder name an annotation file is named after. This module checks,
per annotated study, that it is there, how many files it holds, that they are DICOM (the
``DICM`` marker at byte 128) and that there are at least as many as the annotated series needs
(one slice per index up to the largest annotated ``k``), and lists what is missing. It reads
132 bytes per file, never pixel data. A ``dicom`` folder or study that is a symbolic link is
refused: DVC does not follow links when it hashes the MosMed root (checked with DVC 3.67), so
``dvc.lock`` would pin the annotation files but not the images.
"""

from __future__ import annotations

import math
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from verse_etl.errors import InputError
from verse_etl.mosmed.annotations import read_annotation
from verse_etl.sources.mosmed import IdMapping, discover_mosmed, discovery_problems


@dataclass(frozen=True)
class StudyCheck:
    """One annotated study as placed: how it is stored and what it holds."""

    folder: str
    placed: str  # folder | archive | missing
    files: int = 0  # regular files below dicom/<Folder>/ (0 for an archive or a missing study)
    dicom_files: int = 0  # of those, files with the DICOM marker
    min_slices: int = 0  # the annotated series has at least this many slices
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Placed and without problems."""
        return self.placed != "missing" and not self.problems


@dataclass(frozen=True)
class ImagesReport:
    """The placed studies against the annotation files."""

    root: Path
    studies: tuple[StudyCheck, ...]
    layout_problems: tuple[InputError, ...] = field(default=())

    @property
    def missing(self) -> tuple[str, ...]:
        """Annotated studies with no folder or archive."""
        return tuple(s.folder for s in self.studies if s.placed == "missing")

    @property
    def complete(self) -> bool:
        """Every annotated study is placed without problems and nothing is misplaced."""
        return bool(self.studies) and all(s.ok for s in self.studies) and not self.layout_problems


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _min_slices(annotations: Sequence[Path]) -> tuple[int, list[str]]:
    """Slices the annotated series must have (largest k + 1), and unreadable annotation files."""
    needed, problems = 0, []
    for path in annotations:
        try:
            parsed = read_annotation(path)
        except InputError as e:
            problems.append(str(e))
            continue
        for vertebra in parsed.vertebrae:
            for point in vertebra.points:
                needed = max(needed, math.floor(point[2]) + 1)
    return needed, problems


def check_mosmed_images(
    root: Path,
    annotation_dirs: Sequence[str] = ("annotation", "annotation_v2"),
    id_mappings: Sequence[IdMapping] = (),
) -> ImagesReport:
    """Check the studies placed under ``root/dicom`` against the annotation files (see module)."""
    checks = []
    for study in discover_mosmed(root, annotation_dirs, id_mappings):
        if not study.annotations:
            continue  # a study without annotation is fine: the build converts it all the same
        needed, problems = _min_slices(study.annotations)
        if study.dicom_dir is not None:
            files = [p for p in study.dicom_dir.rglob("*") if p.is_file()]
            n_dicom = sum(1 for p in files if _is_dicom(p))
            if not files:
                problems.append("the study folder is empty")
            elif n_dicom == 0:
                problems.append(f"none of its {len(files)} files is DICOM (no 'DICM' at byte 128)")
            elif n_dicom < needed:
                problems.append(
                    f"{n_dicom} DICOM files, fewer than the {needed} slices the annotated series "
                    "needs (an incomplete download or copy?)"
                )
            checks.append(
                StudyCheck(study.folder, "folder", len(files), n_dicom, needed, tuple(problems))
            )
        elif study.archive is not None:
            try:
                with tarfile.open(study.archive) as tar:
                    tar.next()  # the archive opens and has a first member; the build reads the rest
            except (OSError, tarfile.TarError, EOFError) as e:
                problems.append(f"{study.archive.name} is not a readable tar.gz ({e})")
            checks.append(StudyCheck(study.folder, "archive", 0, 0, needed, tuple(problems)))
        else:
            checks.append(StudyCheck(study.folder, "missing", 0, 0, needed, tuple(problems)))
    layout = discovery_problems(root, annotation_dirs)
    dicom = root / "dicom"
    links = [dicom] if dicom.is_symlink() else []
    links += sorted(p for p in dicom.iterdir() if p.is_symlink()) if dicom.is_dir() else []
    for link in links:
        layout.append(
            InputError(
                link,
                "is a symbolic link (expected a real folder or file): DVC does not follow links "
                "when it hashes the MosMed root, so dvc.lock would not pin these DICOM bytes and "
                "a changed study would not rerun the build stage",
                "move the studies here (mv, or cp --reflink/-al on the same file system)",
                check="study_unplaced",
            )
        )
    return ImagesReport(root, tuple(checks), tuple(layout))


def render_images_report(report: ImagesReport) -> str:
    """The check as text: per-study lines for problems, the missing studies, a verdict."""
    lines = []
    placed = [s for s in report.studies if s.placed != "missing"]
    for s in report.studies:
        if s.placed == "folder":
            what = (
                f"{s.files} files, {s.dicom_files} DICOM (annotated series needs >= {s.min_slices})"
            )
        elif s.placed == "archive":
            what = "packed .tar.gz (members checked by the build)"
        else:
            continue
        lines.append(f"{s.folder}: {what}" + "".join(f"\n    problem: {p}" for p in s.problems))
    for e in report.layout_problems:
        lines.append(f"misplaced: {e}")
    missing = report.missing
    if missing:
        lines.append(
            f"missing {len(missing)} of {len(report.studies)} annotated studies "
            f"(expected {report.root / 'dicom'}/<Folder>/ or <Folder>.tar.gz): "
            + ", ".join(missing)
        )
    if not report.studies:
        lines.append(
            f"{report.root}: no annotation files found; run `verse-etl fetch mosmed-annotations` first"
        )
    verdict = "complete" if report.complete else "incomplete"
    lines.append(
        f"MosMed images {verdict}: {len(placed)} of {len(report.studies)} annotated studies placed, "
        f"{sum(not s.ok for s in placed)} with problems"
    )
    return "\n".join(lines)
