"""MosMed studies that are not clean, written on purpose, with what the pipeline must say.

Spec: ``shared/specs/MOSMED.md`` §5 (edge cases) and §1.4 (older identifiers). Each study starts
as a tiny synthetic study (:func:`verse_etl_sample.mosmed.write_mosmed_sample_study`) and is then
changed file by file with pydicom:

========================  ==============================================================
case                      what is done -> what a build must report
========================  ==============================================================
``packed``                study packed as ``dicom/<Folder>.tar.gz`` (members
                          ``<Folder>/<Folder>/...``), a ``protocols/<Folder>.json`` with a
                          UTF-8 BOM beside it -> converted like a folder, nothing quarantined
``old_identifiers``       v1 file renamed to the older Folder with the older (DCMTK-root)
                          UID; ``folder_uid_mapping_v1_to_v2.csv`` maps them -> matched,
                          ``id_match = mapping``; a localizer image mixed into the annotated
                          series -> set aside (``localizer_removed``), series converted
``no_instance_number``    InstanceNumber removed from the annotated series -> series
                          converted, both annotations refused (``instance_order``); the
                          decoy's orientation zeroed -> ``series_no_geometry``
``uid_not_found``         both annotation files name a UID no file has -> ``series_missing``;
                          decoy positions sheared by a gantry tilt -> ``series_gantry_tilt``
``missing_slice``         one decoy file deleted -> ``series_missing_slices``; a README in
                          the study folder -> ``not_dicom_image``
``no_study``              an annotation whose study folder does not exist -> ``study_missing``
========================  ==============================================================
"""

from __future__ import annotations

import csv
import io
import shutil
import tarfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from verse_etl_sample.manifest import MosmedStudyManifest
from verse_etl_sample.mosmed import _digits, allow_invalid_uids, write_mosmed_sample_study
from verse_etl_sample.output import atomic_file, gzip_member, write_bytes_atomic

MAPPING_NAME = "folder_uid_mapping_v1_to_v2.csv"
"""Where the identifier mapping is written, below ``out/mosmed`` (the real file's name)."""

GANTRY_TILT_DEG = 15.0


@dataclass(frozen=True)
class EdgeCaseManifest:
    """What :func:`write_edge_cases` wrote and what a build must report about it.

    Attributes
    ----------
    studies
        Case name -> the study as first written (before it was changed).
    id_mapping
        The mapping CSV, relative to ``out``.
    quarantine
        ``(case id, check)`` pairs the quarantine table must hold.
    verdicts
        ``(SeriesInstanceUID, verdict)`` the series table must hold.
    id_matches
        ``(Folder, release, id_match)`` of the vertebra rows that must come out.
    """

    studies: tuple[tuple[str, MosmedStudyManifest], ...]
    id_mapping: Path
    quarantine: tuple[tuple[str, str], ...]
    verdicts: tuple[tuple[str, str], ...]
    id_matches: tuple[tuple[str, str, str], ...]

    def study(self, name: str) -> MosmedStudyManifest:
        """The study of one case."""
        return dict(self.studies)[name]


def rewrite_dicom(paths: list[Path], change: Callable[..., object]) -> None:
    """Rewrite DICOM files in place after ``change(dataset, index)`` (atomically, UIDs verbatim).

    ``index`` is the file's position in ``paths``; ``change`` edits the pydicom dataset.
    """
    with allow_invalid_uids(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for i, path in enumerate(paths):
            ds = pydicom.dcmread(path)
            change(ds, i)
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            write_bytes_atomic(path, buffer.getvalue())


def pack_study(dicom_root: Path, folder: str) -> Path:
    """Replace ``dicom/<folder>/`` by ``dicom/<folder>.tar.gz`` holding ``<folder>/<folder>/...``.

    The archive is deterministic: members sorted, mtime 0, owner 0, mode 0644.
    """
    source = dicom_root / folder
    archive = dicom_root / f"{folder}.tar.gz"
    with (
        atomic_file(archive) as raw,
        gzip_member(raw) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            info = tarfile.TarInfo(f"{folder}/{folder}/{path.relative_to(source).as_posix()}")
            info.size = path.stat().st_size
            info.mode, info.mtime, info.uid, info.gid = 0o644, 0, 0, 0
            with open(path, "rb") as f:
                tar.addfile(info, f)
    shutil.rmtree(source)
    return archive


def _old_identifiers(rng: np.random.Generator) -> tuple[str, str]:
    """A Folder and SeriesInstanceUID in the older release's style (MOSMED.md §1.4)."""
    folder = f"RLAD{_digits(rng, 2)}D{_digits(rng, 3)}-{_digits(rng, 5)}_RLS5A{_digits(rng, 5)}KDC6-N{_digits(rng, 8)}"
    uid = f"1.2.276.0.7230010.3.1.3.{_digits(rng, 10, leading_zero=False)}.{_digits(rng, 4)}.{_digits(rng, 10)}.{_digits(rng, 3)}"
    return folder, uid


def write_edge_cases(out: Path, *, seed: int = 0) -> EdgeCaseManifest:
    """Write the edge-case studies below ``out/mosmed`` (see the module docstring).

    Parameters
    ----------
    out
        Sample root; ``out/mosmed/{dicom,annotation,annotation_v2,protocols}`` receive the
        studies, ``out/mosmed/folder_uid_mapping_v1_to_v2.csv`` the mapping.
    seed
        Seed of every random choice.

    Returns
    -------
    EdgeCaseManifest
    """
    mosmed = out / "mosmed"
    dicom = mosmed / "dicom"
    studies: dict[str, MosmedStudyManifest] = {}
    for number, name in enumerate(
        ("packed", "old_identifiers", "no_instance_number", "uid_not_found", "missing_slice")
    ):
        rng = np.random.default_rng([seed, 5, number])
        # Index 2 onwards: unsigned pixels, folder patterns cycling like the regular sample.
        studies[name], _ = write_mosmed_sample_study(out, 2 + number, size="tiny", rng=rng)
    quarantine: list[tuple[str, str]] = []
    verdicts: list[tuple[str, str]] = []
    id_matches: list[tuple[str, str, str]] = []
    rng = np.random.default_rng([seed, 6])

    # packed: a .tar.gz study, and a nodule protocol with a BOM (not read by the pipeline).
    s = studies["packed"]
    pack_study(dicom, s.folder)
    protocol = '{"doctors": [{"comment": "нет очагов"}], "nodules": null}'
    write_bytes_atomic(
        mosmed / "protocols" / f"{s.folder}.json", "\ufeff".encode() + protocol.encode()
    )
    verdicts += [(s.series_uid, "volume"), (s.decoy_series_uid, "volume")]
    id_matches += [(s.folder, "v1", "exact"), (s.folder, "v2", "exact")]

    # old_identifiers: the v1 file as first published, plus a localizer in the annotated series.
    s = studies["old_identifiers"]
    old_folder, old_uid = _old_identifiers(rng)
    v1 = out / s.annotation
    text = v1.read_text(encoding="utf-8")
    text = text.replace(s.folder, old_folder, 1).replace(s.series_uid, old_uid, 1)
    v1.unlink()
    write_bytes_atomic(mosmed / "annotation" / f"{old_folder}.json", text.encode())
    mapping = mosmed / MAPPING_NAME
    with atomic_file(mapping) as f:
        lines = io.StringIO()
        writer = csv.writer(lines, lineterminator="\n")
        writer.writerow(["old_folder", "old_series_uid", "folder", "series_uid"])
        writer.writerow([old_folder, old_uid, s.folder, s.series_uid])
        f.write(lines.getvalue().encode())
    scout = out / s.files[0]
    localizer = scout.with_name(f"{scout.name}L")
    shutil.copy(scout, localizer)

    def make_localizer(ds: pydicom.Dataset, _: int) -> None:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.9"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = len(s.files) + 1

    rewrite_dicom([localizer], make_localizer)
    quarantine += [(s.folder, "localizer_removed")]
    verdicts += [(s.series_uid, "volume")]
    id_matches += [(s.folder, "v1", "mapping"), (s.folder, "v2", "exact")]

    # no_instance_number: annotated k cannot be placed; decoy with an undefined orientation.
    s = studies["no_instance_number"]
    rewrite_dicom([out / p for p in s.files], lambda ds, _: delattr(ds, "InstanceNumber"))
    rewrite_dicom(
        [out / p for p in s.decoy_files],
        lambda ds, _: setattr(ds, "ImageOrientationPatient", [0, 0, 0, 0, 0, 0]),
    )
    quarantine += [(s.folder, "instance_order"), (s.folder, "series_no_geometry")]
    verdicts += [(s.series_uid, "volume"), (s.decoy_series_uid, "no_geometry")]

    # uid_not_found: both annotation files name a series that is not there; tilted decoy.
    s = studies["uid_not_found"]
    wrong = f"{s.series_uid[:-4]}999."
    for path in (out / s.annotation, out / s.annotation_v2):  # type: ignore[operator]  # this study has both
        path.write_bytes(path.read_bytes().replace(s.series_uid.encode(), wrong.encode()))
    shear = float(np.tan(np.radians(GANTRY_TILT_DEG)))

    def tilt(ds: pydicom.Dataset, _: int) -> None:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, round(y + shear * z, 4), z]
        ds.GantryDetectorTilt = GANTRY_TILT_DEG

    rewrite_dicom([out / p for p in s.decoy_files], tilt)
    quarantine += [(s.folder, "series_missing"), (s.folder, "series_gantry_tilt")]
    verdicts += [(s.series_uid, "volume"), (s.decoy_series_uid, "gantry_tilt")]

    # missing_slice: a hole in the decoy; a stray text file among the images.
    s = studies["missing_slice"]
    (out / s.decoy_files[len(s.decoy_files) // 2]).unlink()
    (dicom / s.folder / "README.txt").write_text("exported by a PACS\n", encoding="utf-8")
    quarantine += [(s.folder, "series_missing_slices"), (s.folder, "not_dicom_image")]
    verdicts += [(s.series_uid, "volume"), (s.decoy_series_uid, "missing_slices")]
    id_matches += [(s.folder, "v1", "exact"), (s.folder, "v2", "exact")]

    # no_study: an annotation of a study that is not in dicom/.
    source = studies["missing_slice"]
    lost = f"{source.folder[:-3]}000"
    text = (out / source.annotation).read_text(encoding="utf-8").replace(source.folder, lost, 1)
    write_bytes_atomic(mosmed / "annotation" / f"{lost}.json", text.encode())
    quarantine += [(lost, "study_missing")]

    return EdgeCaseManifest(
        studies=tuple(studies.items()),
        id_mapping=mapping.relative_to(out),
        quarantine=tuple(quarantine),
        verdicts=tuple(verdicts),
        id_matches=tuple(id_matches),
    )
