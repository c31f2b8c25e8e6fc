"""The ``scans`` row of a VerSe scan (``schemas/scans.py``): identity, provenance, geometry,
intensity, scanner and store, each group of columns from what it is computed from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verse_etl.io.nifti import NiftiInfo
from verse_etl.schemas.scans import SCANS
from verse_etl.sources.verse import VerseScan
from verse_etl.stores.hu_histogram import PERCENTILES, HuHistogram
from verse_etl.verse.centroids import CentroidFile
from verse_etl.verse.store import HuSummary


@dataclass(frozen=True)
class StoredScan:
    """What writing a scan's store gave: where it is and the digests of its voxels."""

    store_path: str  # relative to the build root
    ct_voxel_xxh3: str
    mask_voxel_xxh3: str | None
    verified: bool
    store_affine: list[float]  # store indices -> RAS+ mm, row-major (store_frame.py)


def scan_row(
    scan: VerseScan,
    root: Path,
    hashes: dict[str, str],
    ct: NiftiInfo,
    mask: NiftiInfo | None,
    hu: HuHistogram | HuSummary,
    sidecar: dict[str, Any],
    centroids: CentroidFile | None,
    n_mask_labels: int,
    stored: StoredScan,
) -> dict[str, Any]:
    """The scan's row: ``hashes`` are the sha256 of its files by path relative to ``root``,
    ``sidecar`` the scanner fields of its ``_ct.json``."""
    return SCANS.row(
        scan_id=scan.scan_id,
        patient_id=scan.patient_id,
        release=scan.release,
        split=scan.split,
        layout=scan.layout,
        direction=scan.direction,
        **_provenance(scan, root, hashes, centroids),
        **_geometry(ct, mask),
        **_intensity(hu),
        kvp=sidecar.get("kvp"),
        manufacturer=sidecar.get("manufacturer"),
        model=sidecar.get("model"),
        n_mask_labels=n_mask_labels,
        n_centroids=len(centroids.centroids) if centroids else 0,
        store_path=stored.store_path,
        ct_voxel_xxh3=stored.ct_voxel_xxh3,
        mask_voxel_xxh3=stored.mask_voxel_xxh3,
        store_verified=stored.verified,
        store_affine=stored.store_affine,
    )


def _provenance(
    scan: VerseScan, root: Path, hashes: dict[str, str], centroids: CentroidFile | None
) -> dict[str, Any]:
    ct = scan.ct.relative(root)
    mask = scan.mask.relative(root) if scan.mask else None
    points = scan.centroids.relative(root) if scan.centroids else None
    return {
        "ct_path": ct,
        "ct_sha256": hashes[ct],
        "mask_path": mask,
        "mask_sha256": hashes[mask] if mask else None,
        "centroids_path": points,
        "centroids_sha256": hashes[points] if points else None,
        "centroid_format": scan.centroid_format if scan.centroids else None,
        "centroid_axes": centroids.direction if centroids else None,
        "sidecar_path": scan.sidecar.relative(root) if scan.sidecar else None,
        "other_copies": "; ".join(c.relative(root) for c in scan.other_copies) or None,
    }


def _geometry(ct: NiftiInfo, mask: NiftiInfo | None) -> dict[str, Any]:
    return {
        "shape_i": ct.shape[0],
        "shape_j": ct.shape[1],
        "shape_k": ct.shape[2],
        "dtype": ct.dtype.newbyteorder("=").name,
        "mask_dtype": mask.dtype.newbyteorder("=").name if mask else None,
        "spacing_i_mm": ct.spacing_mm[0],
        "spacing_j_mm": ct.spacing_mm[1],
        "spacing_k_mm": ct.spacing_mm[2],
        "affine": [float(v) for v in ct.affine.reshape(-1)],
        "orientation": ct.orientation,
        "qform_code": ct.qform_code,
        "sform_code": ct.sform_code,
    }


def _intensity(hu: HuHistogram | HuSummary) -> dict[str, Any]:
    return {
        "hu_min": hu.minimum,
        "hu_max": hu.maximum,
        "hu_mean": hu.mean,
        **{f"hu_p{q:02d}": hu.percentile(q) for q in PERCENTILES},
    }
