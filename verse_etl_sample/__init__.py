"""Deterministic synthetic sample data in the exact on-disk formats of VerSe and MosMed.

Two entry points, both plain functions (no orchestration):

* :func:`write_sample` writes a small VerSe'19 + VerSe'20 + MosMed tree from a spine phantom;
* :func:`write_annotation_studies` writes DICOM studies that match real MosMed (v1, v2) annotation
  files, so the real keypoints can be run through the pipeline without the real images.

Layout of ``out`` (specs: ``shared/specs/VERSE.md``, ``shared/specs/MOSMED.md``)::

    verse/dataset-verse19training/{rawdata,derivatives}/sub-*/...   VerSe'19 (PIR, oblique)
    verse/dataset-01training/{rawdata,derivatives}/sub-*/...        VerSe'20 (LPS, origin 0)
    verse/ryai190138_appendixe1.xlsx                                 VerSe'19 fracture grades
    mosmed/dicom/<Folder>/<dir>/<dir>/<file>                         DICOM, no extensions
    mosmed/annotation/<Folder>.json                                  v1 keypoints
    mosmed/annotation_v2/<Folder>.json                               v2 keypoints with levels

Same arguments give byte-identical files: every random choice comes from seeded
:class:`numpy.random.Generator` streams, gzip members carry mtime 0, DICOM files carry no dates
but a fixed fake study date, and files are written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from verse_etl.errors import ParamsError
from verse_etl_sample.annotation_studies import (
    ANNOTATION_FOLDERS,
    read_annotation_dir,
    write_annotation_study,
)
from verse_etl_sample.edge_cases import MAPPING_NAME, EdgeCaseManifest, write_edge_cases
from verse_etl_sample.fracture_grades import FILE_NAME as GRADES_FILE
from verse_etl_sample.fracture_grades import write_fracture_grades
from verse_etl_sample.manifest import (
    MosmedStudyManifest,
    MosmedVertebraManifest,
    SampleManifest,
    VerseScanManifest,
)
from verse_etl_sample.mosmed import TRANSFER_SYNTAXES, write_mosmed_sample_study
from verse_etl_sample.output import claim_outputs
from verse_etl_sample.verse import (
    MIN_VERSE_CASES,
    VERSE19_DIR,
    VERSE20_DIR,
    plan_cases,
    write_verse_case,
)

__all__ = [
    "SIZES",
    "EdgeCaseManifest",
    "MosmedStudyManifest",
    "MosmedVertebraManifest",
    "SampleManifest",
    "VerseScanManifest",
    "write_annotation_studies",
    "write_sample",
]

SIZES: tuple[str, ...] = ("tiny", "small", "real")
"""Valid ``size`` values: tests, quick start, benchmarks."""


def _check(name: str, value: object, ok: bool, expected: str) -> None:
    if not ok:
        raise ParamsError(f"sample: {name} is {value!r} (expected {expected}); fix the argument")


def write_sample(
    out: Path,
    *,
    seed: int = 0,
    verse_cases: int = 4,
    mosmed_studies: int = 2,
    size: str = "small",
    overwrite: bool = False,
    edge_cases: bool = False,
) -> SampleManifest:
    """Write a synthetic VerSe + MosMed sample below ``out``.

    Parameters
    ----------
    out
        Output root. ``out/verse/dataset-verse19training``, ``out/verse/dataset-01training``,
        ``out/mosmed/dicom`` and ``out/mosmed/annotation`` are owned by the sample.
    seed
        Seed of every random choice; same arguments give byte-identical files.
    verse_cases
        Total VerSe scans over both releases, at least 4: the VerSe'19 two-scan patient
        (``sub-verse401``: ``split-verse201`` and ``split-verse253``), VerSe'20 ``sub-gl003``
        (``dir-ax``) and VerSe'20 ``sub-verse506`` (no ``dir-``); further scans alternate
        VerSe'19 single-scan subjects (``sub-verse008``, ``sub-verse015``, ...) and VerSe'20
        ``sub-gl016_dir-ax``, ``sub-gl047_dir-ax``, ... (see :func:`verse.plan_cases`).
    mosmed_studies
        MosMed studies (0 or more). Study 1 (the second) has signed pixels with
        RescaleIntercept 0; the others unsigned with -1024.
    size
        ``"tiny"`` (tests: VerSe grids up to 48x48x56 / 40x64x32, MosMed 64x64x~140; < 3 s),
        ``"small"`` (quick start: VerSe ~112-160 voxels per axis, MosMed 128x128x~215), or
        ``"real"`` (benchmarks: VerSe'19 161x338x61 / 186x206x186, VerSe'20 512x512x214/229,
        MosMed 512x512x~400 at 0.8 mm).
    overwrite
        Replace the owned folders if they are not empty (otherwise that is an error).
    edge_cases
        Also write the MosMed edge-case studies of :mod:`verse_etl_sample.edge_cases` (a packed
        study, older identifiers with their mapping CSV, missing InstanceNumber, undefined
        orientation, unknown UID, gantry tilt, missing slice, localizer, stray file, annotation
        without study), whose quarantine records and verdicts are in ``manifest.edge_cases``.

    Returns
    -------
    SampleManifest
        What was written, with the expected labels, fractures and UIDs.

    Raises
    ------
    ParamsError
        For invalid arguments, or if an owned folder is not empty and ``overwrite`` is false.
    """
    _check("size", size, size in SIZES, f"one of {SIZES}")
    _check(
        "verse_cases",
        verse_cases,
        isinstance(verse_cases, int) and verse_cases >= MIN_VERSE_CASES,
        f"an integer >= {MIN_VERSE_CASES}, so that both releases and the split patient exist",
    )
    _check(
        "mosmed_studies",
        mosmed_studies,
        isinstance(mosmed_studies, int) and mosmed_studies >= 0,
        "an integer >= 0",
    )
    _check("seed", seed, isinstance(seed, int) and seed >= 0, "an integer >= 0")
    out = Path(out)
    claim_outputs(
        [
            out / "verse" / VERSE19_DIR,
            out / "verse" / VERSE20_DIR,
            out / "verse" / GRADES_FILE,
            out / "mosmed" / "dicom",
            out / "mosmed" / "annotation",
            out / "mosmed" / "annotation_v2",
            out / "mosmed" / "protocols",
            out / "mosmed" / MAPPING_NAME,
        ],
        overwrite=overwrite,
    )
    scans: list[VerseScanManifest] = []
    files: list[Path] = []
    per_release: dict[str, int] = {}
    for number, case in enumerate(plan_cases(verse_cases)):
        index = per_release.get(case.release, 0)
        per_release[case.release] = index + 1
        # One stream per scan: adding scans never changes the earlier ones.
        rng = np.random.default_rng([seed, 1, number])
        scan, written = write_verse_case(out, case, size=size, index=index, rng=rng)
        scans.append(scan)
        files.extend(written)
    # The VerSe'19 fracture grading table, beside the release folders as users keep it.
    grades = out / "verse" / GRADES_FILE
    write_fracture_grades(grades, scans, np.random.default_rng([seed, 3]))
    files.append(grades)
    studies: list[MosmedStudyManifest] = []
    for i in range(mosmed_studies):
        rng = np.random.default_rng([seed, 2, i])
        study, written = write_mosmed_sample_study(out, i, size=size, rng=rng)
        studies.append(study)
        files.extend(written)
    edge = write_edge_cases(out, seed=seed) if edge_cases else None
    if edge is not None:
        # The edge cases rename, pack and delete files: list what is on disk now.
        known = {p for p in files if p.exists()}
        files = sorted(known | {p for p in (out / "mosmed").rglob("*") if p.is_file()})
    return SampleManifest(
        seed=seed,
        size=size,
        verse=tuple(scans),
        mosmed=tuple(studies),
        files=tuple(sorted(p.relative_to(out) for p in files)),
        edge_cases=edge,
        fracture_grades=grades.relative_to(out),
    )


def write_annotation_studies(
    annotations_dir: Path | Sequence[Path],
    out: Path,
    *,
    seed: int = 0,
    transfer_syntax: str = "rle",
    overwrite: bool = False,
) -> SampleManifest:
    """Write one synthetic DICOM study per study of real MosMed annotation files (v1, v2, both).

    Parameters
    ----------
    annotations_dir
        One or more folders of ``<Folder>.json`` files of either release (e.g. the published
        ``annotation`` and ``annotation_v2``); each file's release is read from its content,
        and a v1 and a v2 file of the same Folder make one study.
    out
        Output root: ``out/mosmed/dicom/<Folder>/...`` per study and a byte-for-byte copy of each
        file in ``out/mosmed/annotation/`` (v1) or ``out/mosmed/annotation_v2/`` (v2). Other
        folders below ``out`` are left alone, so this can share ``out`` with
        :func:`write_sample`.
    seed
        Base seed; each study's stream also depends on its Folder name.
    transfer_syntax
        ``"rle"`` (RLE Lossless, default) or ``"explicit"`` (Explicit VR Little Endian,
        about 40 x larger: ~210 MB per study).
    overwrite
        Replace existing study folders and annotation copies of the same Folder.

    Returns
    -------
    SampleManifest
        ``verse`` empty; one ``mosmed`` entry per study, in Folder order; vertebra labels come
        from the v2 files where given (else a guess, T1 downwards) and fractures ``"unknown"``.

    Raises
    ------
    InputError
        If a folder is missing or empty, or a file is malformed (message names the file).
    ParamsError
        For an unknown ``transfer_syntax`` or existing output without ``overwrite``.
    """
    _check(
        "transfer_syntax",
        transfer_syntax,
        transfer_syntax in TRANSFER_SYNTAXES,
        f"one of {tuple(TRANSFER_SYNTAXES)}",
    )
    _check("seed", seed, isinstance(seed, int) and seed >= 0, "an integer >= 0")
    out = Path(out)
    studies_in = read_annotation_dir(annotations_dir)
    owned = [out / "mosmed" / "dicom" / anns[0].folder for anns in studies_in]
    owned += [
        out / "mosmed" / ANNOTATION_FOLDERS[a.release] / f"{a.folder}.json"
        for anns in studies_in
        for a in anns
    ]
    claim_outputs(owned, overwrite=overwrite)
    studies: list[MosmedStudyManifest] = []
    files: list[Path] = []
    for anns in studies_in:
        study, written = write_annotation_study(
            out, anns, seed=seed, transfer_syntax=transfer_syntax
        )
        studies.append(study)
        files.extend(written)
    return SampleManifest(
        seed=seed,
        size="real",
        verse=(),
        mosmed=tuple(studies),
        files=tuple(sorted(p.relative_to(out) for p in files)),
    )
