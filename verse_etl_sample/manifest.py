"""What a sample run wrote: the ground truth tests and demos compare the pipeline against.

All paths are relative to the ``out`` folder given to the writer, so manifests of two runs into
different folders compare equal when the runs are identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from verse_etl_sample.phantom import FractureType

if TYPE_CHECKING:
    from verse_etl_sample.edge_cases import EdgeCaseManifest

VerseRelease = Literal["verse19", "verse20"]


@dataclass(frozen=True)
class VerseScanManifest:
    """One VerSe scan (five files) written by the sample.

    Attributes
    ----------
    release
        ``"verse19"`` or ``"verse20"``.
    dataset_dir
        Release folder name, e.g. ``"dataset-verse19training"``.
    patient_id, scan_id
        ``sub-`` value and scan id (the ``split-`` value if any, else the subject).
    prefix
        Shared file-name prefix, e.g. ``"sub-verse401_split-verse201"``.
    ct, mask, centroids, sidecar, snapshot
        Paths relative to ``out``.
    shape
        Array shape of CT and mask.
    spacing_mm
        Voxel size along array axes 0, 1, 2.
    orientation
        nibabel axis codes, e.g. ``("P", "I", "R")``.
    mask_dtype
        ``"uint8"`` or ``"float64"`` (the CT is always int16).
    labels
        VerSe labels present in the mask and listed in the centroid file, ascending.
    fractures
        ``(label, fracture type)`` of labelled vertebrae built with a fracture.
    grades
        ``(label, Genant grade, shape code)`` of every labelled level T1..L6, as the sample's
        fracture grading table lists them (grade from the height loss; shape 1 wedge,
        2 biconcave, 3 crush; 0 0 for normal vertebrae).
    device
        ``CT_device`` code (1-5) of the sidecar's scanner, as in the grading table's legend.
    """

    release: VerseRelease
    dataset_dir: str
    patient_id: str
    scan_id: str
    prefix: str
    ct: Path
    mask: Path
    centroids: Path
    sidecar: Path
    snapshot: Path
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    orientation: tuple[str, str, str]
    mask_dtype: str
    labels: tuple[int, ...]
    fractures: tuple[tuple[int, FractureType], ...]
    grades: tuple[tuple[int, int, int], ...] = ()
    device: int = 0


@dataclass(frozen=True)
class MosmedVertebraManifest:
    """One vertebra of an annotated MosMed series.

    Attributes
    ----------
    label
        VerSe label of the phantom vertebra (annotation mode: a running guess, T1 upwards, since
        v1 annotations carry no labels).
    level
        Level name, e.g. ``"T7"``.
    fracture
        Simulated fracture, or ``"unknown"`` for vertebrae rebuilt from real annotations.
    heights_mm
        True anterior, middle and posterior heights (between the noise-free keypoints).
    """

    label: int
    level: str
    fracture: FractureType
    heights_mm: tuple[float, float, float]


@dataclass(frozen=True)
class MosmedStudyManifest:
    """One MosMed study folder: the annotated thin series, a thick decoy series, an annotation.

    Attributes
    ----------
    folder
        Study folder name (= annotation file stem).
    series_uid
        Annotated series, verbatim, with the trailing ``'.'``.
    decoy_series_uid
        Thick series in the same study (not annotated).
    study_uid
        Shared by both series.
    annotation
        Path of ``annotation/<folder>.json`` relative to ``out``.
    files
        DICOM files of the annotated series, InstanceNumber order, relative to ``out``.
    decoy_files
        DICOM files of the decoy series, relative to ``out``.
    rows, columns, n_slices
        Geometry of the annotated series.
    pixel_spacing_mm, slice_spacing_mm
        Row/column spacing and the distance between consecutive slices.
    signed
        True: PixelRepresentation 1, RescaleIntercept 0. False: unsigned, intercept -1024.
    transfer_syntax
        Transfer Syntax UID of every file.
    vertebrae
        Annotated vertebrae, cranial first.
    experts
        ``(expert key, indices into vertebrae)`` in file order.
    annotation_v2
        Path of the labelled v2 annotation ``annotation_v2/<folder>.json`` relative to ``out``,
        or None.
    v2_experts
        ``(expert key, indices into vertebrae)`` of the v2 file, in file order.
    same_readers
        ``(v1 key, v2 key)`` of the readers who annotated both releases (renumbered: the keys
        differ).
    """

    folder: str
    series_uid: str
    decoy_series_uid: str
    study_uid: str
    annotation: Path
    files: tuple[Path, ...]
    decoy_files: tuple[Path, ...]
    rows: int
    columns: int
    n_slices: int
    pixel_spacing_mm: float
    slice_spacing_mm: float
    signed: bool
    transfer_syntax: str
    vertebrae: tuple[MosmedVertebraManifest, ...]
    experts: tuple[tuple[str, tuple[int, ...]], ...]
    annotation_v2: Path | None = None
    v2_experts: tuple[tuple[str, tuple[int, ...]], ...] = ()
    same_readers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SampleManifest:
    """Everything one sample run wrote.

    Attributes
    ----------
    seed, size
        Arguments of the run.
    fracture_grades
        Path (relative to ``out``) of the VerSe'19 grading spreadsheet, if one was written.
    verse
        VerSe scans in writing order (VerSe'19 first).
    mosmed
        MosMed studies in writing order.
    files
        Every file written, relative to ``out``, sorted.
    edge_cases
        The MosMed edge-case studies and what a build must report, if written.
    """

    seed: int
    size: str
    verse: tuple[VerseScanManifest, ...]
    mosmed: tuple[MosmedStudyManifest, ...]
    files: tuple[Path, ...]
    edge_cases: EdgeCaseManifest | None = None
    fracture_grades: Path | None = None

    def scan_ids(self, release: VerseRelease) -> tuple[str, ...]:
        """Scan ids of one release, in writing order."""
        return tuple(s.scan_id for s in self.verse if s.release == release)

    @property
    def mosmed_folders(self) -> tuple[str, ...]:
        """MosMed study folders, in writing order."""
        return tuple(s.folder for s in self.mosmed)

    @property
    def series_uids(self) -> tuple[str, ...]:
        """Annotated MosMed SeriesInstanceUIDs, in writing order."""
        return tuple(s.series_uid for s in self.mosmed)

    def merged(self, other: SampleManifest) -> SampleManifest:
        """Both runs' content (e.g. a sample plus annotation studies in one folder)."""
        return SampleManifest(
            seed=self.seed,
            size=self.size,
            verse=self.verse + other.verse,
            mosmed=self.mosmed + other.mosmed,
            files=tuple(sorted(set(self.files) | set(other.files))),
            fracture_grades=self.fracture_grades or other.fracture_grades,
        )
