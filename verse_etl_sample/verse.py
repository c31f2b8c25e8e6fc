"""Synthetic VerSe scans in the subject-based ("VerSe-complete") layouts.

Spec: ``shared/specs/VERSE.md`` §1-§5. Per scan, five files::

    <out>/verse/dataset-verse19training/rawdata/sub-verse401/sub-verse401_split-verse201_ct.nii.gz
    <out>/verse/dataset-verse19training/rawdata/sub-verse401/sub-verse401_split-verse201_ct.json
    <out>/verse/dataset-verse19training/derivatives/sub-verse401/..._seg-vert_msk.nii.gz
    <out>/verse/dataset-verse19training/derivatives/sub-verse401/..._seg-subreg_ctd.json
    <out>/verse/dataset-verse19training/derivatives/sub-verse401/..._seg-vert_snp.png
    <out>/verse/dataset-01training/rawdata/sub-gl003/sub-gl003_dir-ax_ct.nii.gz    (VerSe'20)

VerSe'19 scans are PIR with an oblique affine (3-6 degrees) and scanner-like translations;
VerSe'20 scans are LPS, anisotropic, diagonal, with zero translation. CT is int16 HU; masks are
uint8 or float64 (both occur in the real releases); both are gzipped NIfTI-1 with nibabel's
header conventions. The centroid file lists, in voxel indices of the stored arrays, the
vertebral-body centroid of every vertebra whose centroid lies inside the field of view; exactly
those vertebrae are labelled in the mask (others at the edges are bone in the CT, 0 in the mask).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nibabel.orientations import aff2axcodes

from verse_etl_sample.manifest import VerseRelease, VerseScanManifest
from verse_etl_sample.nifti import stored_affine, write_nifti_gz
from verse_etl_sample.output import write_bytes_atomic, write_text_atomic
from verse_etl_sample.phantom import (
    FractureType,
    Phantom,
    Slab,
    Trunk,
    build_phantom,
    build_spine,
    iter_slabs,
    spine_labels,
    world_to_voxel,
)
from verse_etl_sample.snapshot import SnapshotBuilder

VERSE19_DIR = "dataset-verse19training"
VERSE20_DIR = "dataset-01training"
SIDECAR_DATASET = "VERSE  - DOI 10.17605/OSF.IO/NQJYW"  # sic: two spaces, as in the release
DEVICES: tuple[tuple[str, str], ...] = (
    ("Philips", "Brilliance 64"),
    ("Philips", "iCT 256"),
    ("Philips", "IQon Spectral CT"),
    ("SIEMENS", "SOMATOM Definition AS+"),
    ("SIEMENS", "SOMATOM Definition AS"),
)
NOISE_HU = 10.0

# Grids per size: (shape, spacing along array axes). VerSe'19: axes P, I, R (resampled, 1-2 mm
# in the real release). VerSe'20: axes L, P, S, real in-plane 0.29-0.32 mm and 1.25 mm slices;
# smaller sizes scale the spacing up so that the same anatomy fits fewer voxels.
GRIDS: dict[
    VerseRelease, dict[str, tuple[tuple[tuple[int, int, int], tuple[float, float, float]], ...]]
] = {
    "verse19": {
        "tiny": (((40, 64, 32), (2.5, 4.0, 4.0)),),
        "small": (((112, 160, 72), (1.4, 1.6, 2.000296)),),
        "real": (((161, 338, 61), (1.0, 1.0, 2.000296)), ((186, 206, 186), (1.0, 1.0, 1.0))),
    },
    "verse20": {
        "tiny": (((48, 48, 56), (3.2, 3.2, 5.0)),),
        "small": (((128, 128, 160), (1.265625, 1.265625, 1.25)),),
        "real": (
            ((512, 512, 214), (0.291016, 0.291016, 1.25)),
            ((512, 512, 229), (0.316406, 0.316406, 1.25)),
        ),
    },
}


@dataclass(frozen=True)
class VerseCase:
    """Plan of one synthetic scan (what :func:`plan_cases` decides before any sampling)."""

    release: VerseRelease
    subject: str
    split: str | None
    direction: str | None
    mask_dtype: str
    center_label: int
    t13: bool = False
    l6: bool = False
    fractures: dict[int, tuple[FractureType, float]] = field(default_factory=dict)

    @property
    def dataset_dir(self) -> str:
        """Release folder name."""
        return VERSE19_DIR if self.release == "verse19" else VERSE20_DIR

    @property
    def prefix(self) -> str:
        """File-name prefix, e.g. ``sub-verse401_split-verse201``."""
        parts = [f"sub-{self.subject}"]
        if self.split:
            parts.append(f"split-{self.split}")
        if self.direction:
            parts.append(f"dir-{self.direction}")
        return "_".join(parts)

    @property
    def scan_id(self) -> str:
        """The ``split-`` value if any, else the subject (amid's convention)."""
        return self.split or self.subject


MIN_VERSE_CASES = 4
_GL_IDS = ("gl003", "gl016", "gl047", "gl090", "gl108", "gl144", "gl195", "gl216", "gl247")


def plan_cases(n: int) -> list[VerseCase]:
    """Which scans a sample of ``n`` VerSe scans holds.

    The first four always exist: the VerSe'19 two-scan patient ``sub-verse401`` (split scans
    ``verse201``, uint8 mask, cervico-thoracic; ``verse253``, float64 mask, thoraco-lumbar with
    a T12 wedge fracture), VerSe'20 ``sub-gl003`` (``dir-ax``, uint8, with a T13 = label 28) and
    VerSe'20 ``sub-verse506`` (no ``dir-`` entity, float64, lumbar with an L6 = label 25 and an
    L2 crush fracture). Scans 5, 7, 9... are VerSe'19 single-scan subjects ``sub-verse008``,
    ``sub-verse015``, ... (float64 masks for the 1st, 3rd, ... of them, else uint8); scans 6, 8,
    ... are VerSe'20 ``sub-gl016_dir-ax``, ``sub-gl047_dir-ax``, ... (uint8). VerSe'19 scans are
    written first.

    Parameters
    ----------
    n
        Total number of scans, at least :data:`MIN_VERSE_CASES`.

    Returns
    -------
    list of VerseCase
        VerSe'19 first, then VerSe'20.
    """
    cases = [
        VerseCase("verse19", "verse401", "verse201", None, "uint8", center_label=10),
        VerseCase(
            "verse19",
            "verse401",
            "verse253",
            None,
            "float64",
            center_label=19,
            fractures={19: ("wedge", 0.62)},
        ),
        VerseCase("verse20", "gl003", None, "ax", "uint8", center_label=19, t13=True),
        VerseCase(
            "verse20",
            "verse506",
            None,
            None,
            "float64",
            center_label=23,
            l6=True,
            fractures={21: ("crush", 0.7)},
        ),
    ]
    centers19 = (15, 21, 5, 12)
    centers20 = (14, 20, 17)
    for extra in range(n - MIN_VERSE_CASES):
        i = extra // 2
        if extra % 2 == 0:
            cases.append(
                VerseCase(
                    "verse19",
                    f"verse{8 + 7 * i:03d}",
                    None,
                    None,
                    "float64" if i % 2 == 0 else "uint8",
                    center_label=centers19[i % len(centers19)],
                    fractures={16: ("biconcave", 0.65)} if i % 3 == 1 else {},
                )
            )
        else:
            gl = _GL_IDS[1 + i] if 1 + i < len(_GL_IDS) else f"gl{500 + i:03d}"
            cases.append(
                VerseCase(
                    "verse20", gl, None, "ax", "uint8", center_label=centers20[i % len(centers20)]
                )
            )
    return sorted(cases, key=lambda c: c.release == "verse20")  # stable: '19 first


def genant(kind: str, ratio: float) -> tuple[int, int]:
    """Genant grade and shape code of a simulated fracture (``ratio``: height kept).

    Grade from the height loss ``1 - ratio``: < 20 % normal (0), 20-25 % mild (1), 25-40 %
    moderate (2), > 40 % severe (3). Shape: 1 wedge, 2 biconcave, 3 crush, 0 none.

    Examples
    --------
    >>> genant("wedge", 0.62), genant("crush", 0.5), genant("normal", 1.0)
    ((2, 1), (3, 3), (0, 0))
    """
    loss = 1.0 - ratio
    grade = 0 if loss < 0.2 else 1 if loss < 0.25 else 2 if loss <= 0.4 else 3
    shape = {"wedge": 1, "biconcave": 2, "crush": 3}.get(kind, 0) if grade else 0
    return grade, shape


def _rotation(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rodrigues rotation matrix about a unit axis."""
    a = axis / np.linalg.norm(axis)
    th = np.deg2rad(angle_deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(th) * k + (1 - np.cos(th)) * (k @ k)


def _geometry(
    case: VerseCase, size: str, index: int, rng: np.random.Generator
) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray]:
    """Grid shape, stored affine and the world point where the centre vertebra goes."""
    grids = GRIDS[case.release][size]
    shape, spacing = grids[index % len(grids)]
    sp = np.asarray(spacing, dtype=float)
    centre_vox = (np.asarray(shape, dtype=float) - 1) / 2
    if case.release == "verse19":
        # Axes P, I, R; a few degrees of rotation about a random axis; the scanner frame puts
        # the patient far from the origin (cf. sub-verse004: -77.7, 218.0, -808.6).
        base = np.column_stack([[0, -1, 0], [0, 0, -1], [1, 0, 0]]).astype(float) * sp
        rot = _rotation(rng.normal(size=3), rng.uniform(3.0, 6.0))
        linear = rot @ base
        fov_centre = np.array(
            [rng.uniform(-20, 20), rng.uniform(100, 160), rng.uniform(-900, -600)]
        )
        affine = np.eye(4)
        affine[:3, :3] = linear
        affine[:3, 3] = fov_centre - linear @ centre_vox
        # The body centroid sits 20 mm anterior of the FOV centre, leaving room for the arch.
        anchor = fov_centre + rot @ np.array([rng.uniform(-4, 4), 20.0, rng.uniform(-8, 8)])
    else:
        # Axes L, P, S; original scanner geometry with the origin at voxel (0, 0, 0).
        affine = np.diag([-sp[0], -sp[1], sp[2], 1.0])
        fov_centre = affine[:3, :3] @ centre_vox
        anchor = fov_centre + np.array([rng.uniform(-4, 4), 20.0, rng.uniform(-8, 8)])
    return (int(shape[0]), int(shape[1]), int(shape[2])), stored_affine(affine), anchor


def build_case_phantom(
    case: VerseCase, anchor: np.ndarray, rng: np.random.Generator, shell_mm: float
) -> Phantom:
    """The phantom of one scan: a whole spine placed so that ``center_label`` is at ``anchor``."""
    labels = spine_labels(t13=case.t13, l6=case.l6)
    vertebrae = build_spine(
        labels,
        top=np.zeros(3),
        rng=rng,
        fractures=case.fractures,
        curvature=rng.uniform(0.6, 1.0),
        anchor=(case.center_label, anchor),
    )
    spine_y = float(np.median([v.centroid[1] for v in vertebrae]))
    thoracic = [v.centroid[2] for v in vertebrae if 8 <= v.label <= 19]
    trunk = Trunk(
        center_xy=(float(anchor[0]), spine_y + 55.0),
        lungs_z=(min(thoracic) + 20.0, max(thoracic) + 10.0),
    )
    return build_phantom(vertebrae, trunk, shell_mm=shell_mm)


def _tee(
    slabs: Iterator[Slab], snapshot: SnapshotBuilder, labels: list[np.ndarray]
) -> Iterator[np.ndarray]:
    """Yield the HU of each slab while keeping its labels and feeding the snapshot."""
    for slab in slabs:
        snapshot.add(slab.k0, slab.hu, slab.label)
        labels.append(slab.label)
        yield slab.hu


def write_verse_case(
    out: Path, case: VerseCase, *, size: str, index: int, rng: np.random.Generator
) -> tuple[VerseScanManifest, list[Path]]:
    """Write the five files of one scan.

    Parameters
    ----------
    out
        Sample root; files go below ``out / "verse"``.
    case
        What to write (see :func:`plan_cases`).
    size
        ``"tiny"``, ``"small"`` or ``"real"``.
    index
        Position among the release's scans (picks among the size's grids).
    rng
        Generator owned by this scan.

    Returns
    -------
    manifest : VerseScanManifest
    files : list of Path
        Absolute paths written.
    """
    shape, affine, anchor = _geometry(case, size, index, rng)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    shell_mm = float(np.clip(0.6 * spacing.max(), 1.2, 3.0))
    phantom = build_case_phantom(case, anchor, rng, shell_mm)

    # A vertebra is annotated when its body centroid falls inside the grid.
    centroids: dict[int, np.ndarray] = {}
    for v in phantom.vertebrae:
        vox = world_to_voxel(affine, v.centroid)
        if np.all(vox > -0.5) and np.all(vox < np.asarray(shape) - 0.5):
            centroids[v.label] = vox
    if len(centroids) < 3:
        raise AssertionError(f"{case.prefix}: only {len(centroids)} vertebrae in the field of view")

    root = out / "verse" / case.dataset_dir
    raw_dir = root / "rawdata" / f"sub-{case.subject}"
    der_dir = root / "derivatives" / f"sub-{case.subject}"
    ct_path = raw_dir / f"{case.prefix}_ct.nii.gz"
    sidecar_path = raw_dir / f"{case.prefix}_ct.json"
    mask_path = der_dir / f"{case.prefix}_seg-vert_msk.nii.gz"
    ctd_path = der_dir / f"{case.prefix}_seg-subreg_ctd.json"
    snp_path = der_dir / f"{case.prefix}_seg-vert_snp.png"

    # Sample once: the CT streams to disk while the (uint8, 8x smaller than float64) labels and
    # the snapshot projections are kept for the mask file written next.
    snapshot = SnapshotBuilder(shape, affine)
    mask_slabs: list[np.ndarray] = []
    slabs = iter_slabs(
        phantom, shape, affine, labelled=frozenset(centroids), noise_hu=NOISE_HU, rng=rng
    )
    write_nifti_gz(ct_path, shape, np.int16, affine, _tee(slabs, snapshot, mask_slabs))
    write_nifti_gz(mask_path, shape, np.dtype(case.mask_dtype), affine, mask_slabs)
    labels_seen = set(np.unique(np.concatenate([np.unique(m) for m in mask_slabs])).tolist())
    labels_seen.discard(0)
    if labels_seen != set(centroids):
        raise AssertionError(
            f"{case.prefix}: mask labels {labels_seen} != centroids {set(centroids)}"
        )

    codes = aff2axcodes(affine)
    entries: list[dict[str, object]] = [{"direction": list(codes)}]
    for label in sorted(centroids):
        x, y, z = (round(float(c), 1) + 0.0 for c in centroids[label])
        entries.append({"label": int(label), "X": x, "Y": y, "Z": z})
    write_text_atomic(ctd_path, json.dumps(entries))

    device = int(rng.integers(len(DEVICES)))
    manufacturer, model = DEVICES[device]
    sidecar = {
        "dataset": SIDECAR_DATASET,
        "KVP": str(rng.choice(["100", "120", "120", "140"])),
        "Manufacturer": manufacturer,
        "ManufacturerModelName": model,
    }
    write_text_atomic(sidecar_path, json.dumps(sidecar, indent=4))
    write_bytes_atomic(
        snp_path, snapshot.png_bytes(np.array([centroids[k] for k in sorted(centroids)]))
    )

    manifest = VerseScanManifest(
        release=case.release,
        dataset_dir=case.dataset_dir,
        patient_id=case.subject,
        scan_id=case.scan_id,
        prefix=case.prefix,
        ct=ct_path.relative_to(out),
        mask=mask_path.relative_to(out),
        centroids=ctd_path.relative_to(out),
        sidecar=sidecar_path.relative_to(out),
        snapshot=snp_path.relative_to(out),
        shape=shape,
        spacing_mm=(
            round(float(spacing[0]), 6),
            round(float(spacing[1]), 6),
            round(float(spacing[2]), 6),
        ),
        orientation=(str(codes[0]), str(codes[1]), str(codes[2])),
        mask_dtype=case.mask_dtype,
        labels=tuple(sorted(centroids)),
        fractures=tuple(
            (v.label, v.fracture)
            for v in phantom.vertebrae
            if v.label in centroids and v.fracture != "normal"
        ),
        grades=tuple(
            (label, *genant(*case.fractures.get(label, ("normal", 1.0))))
            for label in sorted(centroids)
            if 8 <= label <= 25
        ),
        device=device + 1,
    )
    return manifest, [ct_path, sidecar_path, mask_path, ctd_path, snp_path]
