"""Build one VerSe scan: CT and mask to a Zarr store, header, mask labels and centroids to rows."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from verse_etl import __version__
from verse_etl.centroids import read_centroids
from verse_etl.errors import InputError
from verse_etl.hashing import fingerprint, sha256_file
from verse_etl.io.nifti import NiftiInfo, NiftiVoxelReader, iter_nifti_slabs, read_nifti_info
from verse_etl.levels import VERSE_LEVELS
from verse_etl.params import VolumeParams
from verse_etl.paths import case_result_path, verse_store_path
from verse_etl.records import CaseResult, QuarantineRecord, load_cached, relative, write_text_atomic
from verse_etl.sources.verse import VerseScan
from verse_etl.volumes import IMAGE_PATH, LABELS_PATH, StoreWriter, as_labels, slab_depth

SOURCE = "verse"
AFFINE_TOLERANCE_MM = 1e-3


def build_verse_scan(scan: VerseScan, root: Path, out: Path, volumes: VolumeParams) -> CaseResult:
    """Convert one scan and return its rows; reuse the saved result if nothing changed.

    Any :class:`InputError` quarantines the case (one record naming file and reason); other cases
    are unaffected.
    """
    files = [p for p in (scan.ct_path, scan.mask_path, scan.centroids_path, scan.sidecar_path) if p]
    try:
        hashes = {relative(p, root): sha256_file(p) for p in files}
    except OSError as e:
        error = InputError(
            getattr(e, "filename", None) or scan.ct_path, f"cannot read ({e})", check="read"
        )
        return _rejected(scan, root, error, "")
    key = fingerprint(__version__, hashes, volumes)
    cache = case_result_path(out, SOURCE, scan.scan_id)
    store = verse_store_path(out, scan.scan_id)
    cached = load_cached(cache, key)
    # A cached rejection has no store; a cached success needs its store to still be there.
    if cached is not None and (store.exists() or not cached.rows.get("scans")):
        return cached
    try:
        result = _convert(scan, root, out, volumes, hashes, key)
    except InputError as e:
        result = _rejected(scan, root, e, key)
    write_text_atomic(cache, result.to_json())
    return result


def duplicate_scans_result(pairs: list[tuple[VerseScan, VerseScan]], root: Path) -> CaseResult:
    """Quarantine records (severity warn) naming every dropped duplicate and the copy kept."""
    result = CaseResult(source=SOURCE, case_id="(duplicates)", fingerprint="")
    for dropped, kept in pairs:
        path = relative(dropped.ct_path, root)
        result.quarantine.append(
            QuarantineRecord(
                source=SOURCE,
                case_id=dropped.scan_id,
                table="scans",
                file=path,
                check="duplicate_scan",
                reason=f"{path}: scan {dropped.scan_id} is also in {kept.release} "
                f"as {relative(kept.ct_path, root)}; that copy was kept, this one left out",
            )
        )
    return result


def _rejected(scan: VerseScan, root: Path, error: InputError, key: str) -> CaseResult:
    result = CaseResult(source=SOURCE, case_id=scan.scan_id, fingerprint=key)
    result.quarantine.append(
        QuarantineRecord.from_error(error, SOURCE, scan.scan_id, root, table="scans")
    )
    return result


def _convert(
    scan: VerseScan, root: Path, out: Path, volumes: VolumeParams, hashes: dict[str, str], key: str
) -> CaseResult:
    result = CaseResult(source=SOURCE, case_id=scan.scan_id, fingerprint=key)
    ct = read_nifti_info(scan.ct_path)
    mask = read_nifti_info(scan.mask_path) if scan.mask_path else None
    if mask is not None:
        _check_same_grid(ct, mask)
    store = verse_store_path(out, scan.scan_id)
    hu = [math.inf, -math.inf]

    def ct_stats(k0: int, slab: np.ndarray) -> None:
        if slab.size:
            hu[0], hu[1] = min(hu[0], float(slab.min())), max(hu[1], float(slab.max()))

    counts = np.zeros(256, dtype=np.int64)

    def mask_slabs():
        assert mask is not None
        slabs = iter_nifti_slabs(mask, slab_depth(mask.shape, mask.dtype))
        for k0, slab in as_labels(slabs, mask.path):
            counts[:] += np.bincount(slab.reshape(-1), minlength=256)
            yield k0, slab

    attributes = _store_attributes(scan, ct)
    with StoreWriter(store, volumes, attributes, affine=ct.affine) as writer:
        # The reader decodes straight into the writer's staging rows (no copy on this thread).
        reader = NiftiVoxelReader(ct)
        ct_array = writer.write_array(IMAGE_PATH, ct.shape, reader.dtype, reader, on_slab=ct_stats)
        mask_array = None
        if mask is not None:
            mask_array = writer.write_array(
                LABELS_PATH,
                mask.shape,
                np.dtype(np.uint8),
                mask_slabs(),
                attributes={"labels": {str(k): v for k, v in VERSE_LEVELS.items()}},
                label_names=VERSE_LEVELS,
            )
    result.stores_written = 1

    mask_labels = {int(k): int(n) for k, n in enumerate(counts) if k > 0 and n > 0}
    centroids = (
        read_centroids(scan.centroids_path, ct.shape, ct.affine, ct.orientation)
        if scan.centroids_path
        else None
    )
    if centroids is not None:
        for note in centroids.skipped:
            result.quarantine.append(
                QuarantineRecord(
                    source=SOURCE,
                    case_id=scan.scan_id,
                    table="vertebrae",
                    file=relative(centroids.path, root),
                    check="centroid_nan",
                    reason=f"{relative(centroids.path, root)}: {note}; the entry is left out",
                )
            )
    by_label = {c.label: c for c in (centroids.centroids if centroids else ())}
    voxel_mm3 = float(np.prod(ct.spacing_mm))
    for label in sorted(set(mask_labels) | set(by_label)):
        c = by_label.get(label)
        result.add(
            "vertebrae",
            {
                "scan_id": scan.scan_id,
                "label": label,
                "level": VERSE_LEVELS.get(label, f"label{label}"),
                "in_mask": label in mask_labels,
                "in_centroids": c is not None,
                "centroid_i": c.voxel[0] if c else None,
                "centroid_j": c.voxel[1] if c else None,
                "centroid_k": c.voxel[2] if c else None,
                "centroid_x_mm": c.world[0] if c else None,
                "centroid_y_mm": c.world[1] if c else None,
                "centroid_z_mm": c.world[2] if c else None,
                "mask_voxels": mask_labels.get(label, 0),
                "volume_mm3": mask_labels.get(label, 0) * voxel_mm3,
            },
        )
    sidecar = _read_sidecar(scan.sidecar_path)
    ct_rel = relative(scan.ct_path, root)
    mask_rel = relative(scan.mask_path, root) if scan.mask_path else None
    result.add(
        "scans",
        {
            "scan_id": scan.scan_id,
            "patient_id": scan.patient_id,
            "release": scan.release,
            "split": scan.split,
            "direction": scan.direction,
            "ct_path": ct_rel,
            "ct_sha256": hashes[ct_rel],
            "mask_path": mask_rel,
            "mask_sha256": hashes[mask_rel] if mask_rel else None,
            "centroids_path": relative(scan.centroids_path, root) if scan.centroids_path else None,
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
            "hu_min": hu[0],
            "hu_max": hu[1],
            "kvp": sidecar.get("kvp"),
            "manufacturer": sidecar.get("manufacturer"),
            "model": sidecar.get("model"),
            "n_mask_labels": len(mask_labels),
            "n_centroids": len(by_label),
            "store_path": relative(store, out),
            "ct_voxel_sha256": ct_array.voxel_sha256,
            "mask_voxel_sha256": mask_array.voxel_sha256 if mask_array else None,
            "store_verified": ct_array.verified and (mask_array is None or mask_array.verified),
        },
    )
    return result


def _check_same_grid(ct: NiftiInfo, mask: NiftiInfo) -> None:
    if ct.shape != mask.shape:
        raise InputError(
            mask.path,
            f"mask shape {mask.shape} differs from the CT's (expected {ct.shape})",
            "the mask belongs to another image or was cropped",
            check="image_mask_geometry",
        )
    if not np.allclose(ct.affine, mask.affine, atol=AFFINE_TOLERANCE_MM):
        raise InputError(
            mask.path,
            "mask affine differs from the CT's (expected "
            f"{ct.affine.round(3).tolist()}, got {mask.affine.round(3).tolist()})",
            "the mask belongs to another image or was resampled",
            check="image_mask_geometry",
        )


def _store_attributes(scan: VerseScan, ct: NiftiInfo) -> dict[str, Any]:
    return {
        "verse_etl": {
            "source": SOURCE,
            "scan_id": scan.scan_id,
            "affine": [[float(v) for v in row] for row in ct.affine],
            "orientation": ct.orientation,
            "spacing_mm": list(ct.spacing_mm),
            "axes": "NIfTI array axes as stored; affine maps (i, j, k) to RAS+ mm",
        }
    }


def _read_sidecar(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(
            path, f"sidecar is not valid JSON ({e})", "re-download the file", check="sidecar"
        ) from e
    if not isinstance(data, dict):
        raise InputError(
            path, f"sidecar must be a JSON object, got {type(data).__name__}", check="sidecar"
        )
    kvp = data.get("KVP")
    try:
        kvp = float(kvp) if kvp not in (None, "") else None
    except (TypeError, ValueError):
        kvp = None
    return {
        "kvp": kvp,
        "manufacturer": data.get("Manufacturer"),
        "model": data.get("ManufacturerModelName"),
    }
