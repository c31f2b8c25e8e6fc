"""Build one VerSe scan: CT and mask to a Zarr store; header, intensity, label and centroid rows.

Everything is computed in one streaming pass over each file: the CT's exact HU histogram while
its slabs go to the store, and the mask's label statistics (counts, bounding boxes, centres of
mass, connected components) while it is read in thin slabs of at most
:data:`verse_etl.verse.store.MASK_SLAB_BYTES`,
converted to uint8 and regrouped into the store's slab depth. A 512x512x229 float64 mask (480 MB
whole) is never in memory at once (``benchmarks/label_stats.py`` measures it).

What is a check of a table (labels in the label map, islands, centroids inside the volume,
cranio-caudal order, mask vs centroid labels) is a pandera check in ``schemas/``; what makes the
scan unusable (unreadable file, image and mask on different grids, a float mask holding
non-integer values) rejects the scan here with one quarantine record.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from verse_etl.cases.hashing import case_code_identity, fingerprint
from verse_etl.cases.records import (
    CaseResult,
    discovery_result,
    load_cached,
    load_saved,
    write_text_atomic,
)
from verse_etl.cases.seal import seal_case
from verse_etl.cases.stat_cache import DigestCache
from verse_etl.errors import InputError, blame, is_transient, output_trouble
from verse_etl.geometry.affines import apply_affine
from verse_etl.geometry.reorient import AxisMap, axis_map
from verse_etl.geometry.store_frame import store_frame
from verse_etl.io.files import SourceFile
from verse_etl.io.json_files import read_json
from verse_etl.io.nifti import (
    NiftiInfo,
    header_matches_data,
    read_nifti_info,
)
from verse_etl.params import CheckParams, InputLimits, VolumeParams
from verse_etl.paths import case_result_path, digest_cache_path
from verse_etl.schemas.scans import SCANS
from verse_etl.schemas.vertebrae import VERTEBRAE
from verse_etl.sources.verse import VerseScan, VerseSources
from verse_etl.stores.hu_histogram import HuHistogram
from verse_etl.verse.centroids import CentroidFile, read_centroids
from verse_etl.verse.fracture_grades import fracture_grades_result
from verse_etl.verse.scan import StoredScan, scan_row
from verse_etl.verse.store import (
    HuSummary,
    probe_labels,
    reusable_store,
    scan_store_key,
    write_scan_store,
)
from verse_etl.verse.vertebrae import vertebra_rows

SOURCE = "verse"


def build_verse_scan(
    scan: VerseScan,
    root: Path,
    out: Path,
    volumes: VolumeParams,
    checks: CheckParams | None = None,
    store_exists: Callable[[Path], bool] = Path.exists,
    rehash: bool = False,
) -> CaseResult:
    """Convert one scan and return its rows; reuse the saved result if nothing changed.

    Parameters
    ----------
    scan
        The scan's files, as discovered.
    root
        VerSe source root (paths in the tables are relative to it).
    out
        Build root.
    volumes
        Zarr layout.
    checks
        Check parameters (``min_island_voxels``, ``geometry_tolerance_mm``); defaults if None.
    store_exists
        Whether the saved result's store is still there (an object store's check for builds
        published to a URL; see :mod:`verse_etl.publish.staging`).
    rehash
        Read and hash every source file; else a file whose stat is unchanged since it was
        hashed keeps its digest (:mod:`verse_etl.cases.stat_cache`).

    Returns
    -------
    CaseResult
        Rows for ``scans`` and ``vertebrae``, and quarantine records. Any :class:`InputError`
        that makes the scan unusable quarantines the case (one record naming file and reason);
        other cases are unaffected.
    """
    checks = checks or CheckParams()
    return seal_case(
        lambda: _build_scan(scan, root, out, volumes, checks, store_exists, rehash),
        SOURCE,
        scan.scan_id,
        scan.ct,
        root,
        out,
        SCANS.name,
    )


def _build_scan(
    scan: VerseScan,
    root: Path,
    out: Path,
    volumes: VolumeParams,
    checks: CheckParams,
    store_exists: Callable[[Path], bool],
    rehash: bool,
) -> CaseResult:
    cache = case_result_path(out, SOURCE, scan.scan_id)
    digests = DigestCache(digest_cache_path(out, SOURCE, scan.scan_id), rehash)
    try:
        hashes = {f.relative(root): digests.sha256(f) for f in scan.files}
    except (InputError, OSError) as e:
        if is_transient(e) or output_trouble(e):
            raise
        # Saved (with no fingerprint, so the next build tries again) like every other result:
        # the tables are assembled from the saved results, and the record must reach them.
        error = e if isinstance(e, InputError) else _unreadable(scan, e)
        result = _rejected(scan, root, error, "")
        write_text_atomic(cache, result.to_json())
        return result
    digests.save()  # out of the try: a failed write is the output's trouble, not the input's
    identity = {
        "patient_id": scan.patient_id,
        "release": scan.release,
        "split": scan.split,
        "direction": scan.direction,
        "layout": scan.layout,
        "centroid_format": scan.centroid_format,
        "other_copies": [c.relative(root) for c in scan.other_copies],
    }
    case_checks = {
        "min_island_voxels": checks.min_island_voxels,
        "geometry_tolerance_mm": checks.geometry_tolerance_mm,
        "limits": checks.limits,
        # Masks in another orientation on the same grid are aligned, no longer rejected: a
        # saved rejection from before must not be reused.
        "mask_alignment": "axis-map-1",
    }
    key = fingerprint(
        case_code_identity("verse_etl.verse.case"), hashes, volumes, identity, case_checks
    )
    cached = load_cached(cache, key)
    # A cached rejection has no store; a cached success needs its store to still be there.
    if cached is not None and all(
        store_exists(out / row["store_path"]) for row in cached.rows.get(SCANS.name, [])
    ):
        return cached
    # The result saved by an earlier build (another key): its stores may still serve.
    previous = load_saved(cache)
    kept = previous.stores if previous is not None else {}
    try:
        result = _convert(scan, root, out, volumes, checks, hashes, key, kept, store_exists)
    except InputError as e:
        if is_transient(e):
            raise
        result = _rejected(scan, root, e, key)
    write_text_atomic(cache, result.to_json())
    return result


def duplicate_scans_result(pairs: list[tuple[VerseScan, VerseScan]], root: Path) -> CaseResult:
    """Quarantine records (severity warn) naming every dropped duplicate and the copy kept."""
    result = CaseResult(source=SOURCE, case_id="_duplicates", fingerprint="")
    for dropped, kept in pairs:
        path = dropped.ct.relative(root)
        result.flag(
            path,
            "duplicate_scan",
            f"scan {dropped.scan_id} ({dropped.release}, {dropped.layout} layout) is also in "
            f"{kept.release} ({kept.layout} layout) as {kept.ct.relative(root)}; that copy was "
            "kept, this one left out",
            table=SCANS.name,
            case_id=dropped.scan_id,
        )
    return result


def source_results(
    found: VerseSources, root: Path, scans: list[CaseResult], out: Path
) -> list[CaseResult]:
    """What a VerSe source gives beyond its scans, once they are built.

    The copies of scans left out (:func:`duplicate_scans_result`), the files discovery could not
    use (:func:`~verse_etl.cases.records.discovery_result`) and the VerSe'19 fracture grades, joined to ``scans``; each
    only where there is something to say. The caller saves them beside the scans' results.
    """
    results = [duplicate_scans_result(list(found.duplicates), root)] if found.duplicates else []
    results += [discovery_result(SOURCE, found.problems, root)] if found.problems else []
    if found.grade_tables:
        results.append(fracture_grades_result(found.grade_tables, root, scans, out))
    return results


def _unreadable(scan: VerseScan, error: OSError) -> InputError:
    return InputError(
        getattr(error, "filename", None) or scan.ct,
        f"cannot read ({error})",
        "check the file's permissions and the disk",
        check="read",
    )


def _rejected(scan: VerseScan, root: Path, error: InputError, key: str) -> CaseResult:
    result = CaseResult(source=SOURCE, case_id=scan.scan_id, fingerprint=key)
    result.flag_error(error, root, table=SCANS.name)
    return result


def _convert(
    scan: VerseScan,
    root: Path,
    out: Path,
    volumes: VolumeParams,
    checks: CheckParams,
    hashes: dict[str, str],
    key: str,
    kept: dict[str, dict[str, Any]],
    store_exists: Callable[[Path], bool],
) -> CaseResult:
    result = CaseResult(source=SOURCE, case_id=scan.scan_id, fingerprint=key)
    with blame(scan.ct, "reading the CT header"):
        ct = read_nifti_info(scan.ct, checks.limits)
    with blame(scan.mask or scan.ct, "reading the mask header"):
        mask = read_nifti_info(scan.mask, checks.limits) if scan.mask else None
    aligned = _align_mask(scan, root, result, ct, mask, checks) if mask is not None else None
    centroids = _read_centroids(scan, ct, root, result, checks.limits)
    sidecar = _read_sidecar(scan, root, result, checks.limits)
    points = [c.voxel for c in centroids.centroids] if centroids else []
    frame = store_frame(ct.affine, ct.shape)
    # The store depends on the CT and mask files only (not the centroids, the sidecar or the
    # checks of the rows): reused as it is when its own key is unchanged.
    store_sources = {f.relative(root): hashes[f.relative(root)] for f in (scan.ct, scan.mask) if f}
    store_key = scan_store_key(scan.scan_id, store_sources, volumes, checks.limits, aligned)
    stored_scan = None
    for kept_store in kept.values():
        stored_scan = stored_scan or reusable_store(
            kept_store, scan.scan_id, store_key, out, store_exists
        )
    if stored_scan is None:
        stored_scan = write_scan_store(scan.scan_id, ct, mask, aligned, out, volumes, store_key)
        result.stores_written = 1
    result.stores[stored_scan.store_path] = stored_scan.to_dict()
    hu = stored_scan.hu
    for check, problem in voxel_findings(ct, hu):
        result.flag_error(InputError(scan.ct, problem, check=check), root, table=SCANS.name)

    summaries = stored_scan.summaries()
    store = out / stored_scan.store_path
    with blame(store, "reading the mask labels at the centroids back from the store"):
        probed: list[int | None] = (
            probe_labels(store, frame, points) if mask is not None else [None] * len(points)
        )
    for row in vertebra_rows(
        scan.scan_id, ct, frame, summaries, centroids, probed, checks.min_island_voxels
    ):
        result.add(VERTEBRAE.name, row)
    stored = StoredScan(
        store_path=stored_scan.store_path,
        ct_voxel_xxh3=stored_scan.ct_voxel_xxh3,
        mask_voxel_xxh3=stored_scan.mask_voxel_xxh3,
        verified=stored_scan.verified,
        store_affine=[float(v) for v in frame.store_affine(ct.affine).reshape(-1)],
    )
    row = scan_row(scan, root, hashes, ct, mask, hu, sidecar, centroids, len(summaries), stored)
    result.add(SCANS.name, row)
    return result


def voxel_findings(ct: NiftiInfo, hu: HuHistogram | HuSummary) -> list[tuple[str, str]]:
    """Voxel sanity of a converted CT, from the statistics gathered while it streamed.

    Returns ``(check, problem)`` pairs: ``voxel_nonfinite`` (NaN or infinite voxels: a float CT
    holding them, or an ``scl_slope``/``scl_inter`` that overflows float32) and
    ``voxel_constant`` (every voxel the same value). The scan is kept; the check's mode decides
    whether the build fails.
    """
    findings = []
    scaling = (
        f"; scl_slope {ct.scl_slope:g} and scl_inter {ct.scl_inter:g} scale the stored "
        f"{ct.dtype.newbyteorder('=').name} values to float32"
        if ct.scaled
        else ""
    )
    if hu.nonfinite:
        findings.append(
            (
                "voxel_nonfinite",
                f"{hu.nonfinite} of {hu.nonfinite + hu.n} voxels are NaN or infinite{scaling} "
                "(expected finite CT values); kept, HU statistics use the finite ones",
            )
        )
    if hu.n and hu.minimum == hu.maximum:
        findings.append(
            (
                "voxel_constant",
                f"every finite voxel is {hu.minimum:g}{scaling} (expected a CT with contrast); "
                "kept",
            )
        )
    return findings


def _read_centroids(
    scan: VerseScan, ct: NiftiInfo, root: Path, result: CaseResult, limits: InputLimits
) -> CentroidFile | None:
    if scan.centroids is None:
        return None
    try:
        with blame(scan.centroids, "reading the centroid file"):
            parsed = read_centroids(
                scan.centroids, ct.shape, ct.affine, ct.orientation, scan.centroid_format, limits
            )
    except InputError as e:
        # The CT and mask are still good: keep the scan, report the file, list no centroids.
        result.flag_error(e, root, table=VERTEBRAE.name)
        return None
    path = scan.centroids.relative(root)
    for note in parsed.skipped:
        check = "centroid_nan" if "NaN" in note else "centroid_subregion"
        result.flag(path, check, note, fix="the entry is left out", table=VERTEBRAE.name)
    return parsed


def _align_mask(
    scan: VerseScan,
    root: Path,
    result: CaseResult,
    ct: NiftiInfo,
    mask: NiftiInfo,
    checks: CheckParams,
) -> AxisMap | None:
    """None when the mask is on the CT's grid; the axis map when it is the same grid stored in
    another orientation (VerSe'19 MICCAI verse201), recorded as ``mask_reoriented``.

    Raises
    ------
    InputError
        As :func:`check_same_grid` for any other mismatch.
    """
    try:
        check_same_grid(ct, mask, checks.geometry_tolerance_mm)
        return None
    except InputError as e:
        if e.check != "image_mask_geometry":
            raise
        found = axis_map(ct.affine, ct.shape, mask.affine, mask.shape, checks.geometry_tolerance_mm)
        if found is None or found.is_identity:
            raise
    result.flag_error(
        InputError(
            mask.path,
            f"mask stored as {mask.orientation} {mask.shape}, CT as {ct.orientation} {ct.shape}: "
            f"the same voxel grid up to axis order and flips ({found.describe()}); the mask "
            "was aligned to the CT's axes voxel for voxel (no resampling) and built",
            "nothing to do; store the mask in the CT's orientation to silence this",
            check="mask_reoriented",
        ),
        root,
        table=SCANS.name,
    )
    return found


def check_same_grid(ct: NiftiInfo, mask: NiftiInfo, tolerance_mm: float) -> None:
    """Refuse a mask that is not on the CT's voxel grid.

    The affines are compared by where they put the corners of the volume (a rotation error
    shows up in millimetres, like a translation), within ``tolerance_mm``.

    Raises
    ------
    InputError
        ``image_mask_geometry``: different shape, or a corner further than ``tolerance_mm``;
        ``shape`` naming the CT (or mask) whose header shape does not fit its own voxel data,
        when that is why the shapes differ.
    """
    if ct.shape != mask.shape:
        for liar, other in ((ct, mask), (mask, ct)):
            if header_matches_data(liar) is False and header_matches_data(other) is not False:
                # The header that does not fit its own voxel data is the one at fault.
                raise InputError(
                    liar.path,
                    f"header shape {liar.shape} of {liar.dtype} does not fit the file's voxel "
                    f"data (expected {math.prod(liar.shape) * liar.dtype.itemsize} bytes; the "
                    f"{'mask' if liar is mask else 'CT'} on the other side has shape "
                    f"{other.shape})",
                    "the header was edited or the file is damaged; re-download it",
                    check="shape",
                )
        raise InputError(
            mask.path,
            f"mask shape {mask.shape} differs from the CT's (expected {ct.shape})",
            "the mask belongs to another image or was cropped",
            check="image_mask_geometry",
        )
    corners = np.array(
        [
            [i, j, k]
            for i in (0, ct.shape[0] - 1)
            for j in (0, ct.shape[1] - 1)
            for k in (0, ct.shape[2] - 1)
        ],
        dtype=float,
    )
    gap = float(np.abs(apply_affine(ct.affine, corners) - apply_affine(mask.affine, corners)).max())
    if gap > tolerance_mm:
        raise InputError(
            mask.path,
            f"mask affine differs from the CT's by up to {gap:.3g} mm at the volume's corners "
            f"(expected at most {tolerance_mm} mm; CT {ct.orientation} "
            f"{ct.affine.round(3).tolist()}, mask {mask.orientation} "
            f"{mask.affine.round(3).tolist()})",
            "the mask belongs to another image, was resampled, or is stored in another "
            "orientation; resample it onto the CT grid",
            check="image_mask_geometry",
        )


def _read_sidecar(
    scan: VerseScan, root: Path, result: CaseResult, limits: InputLimits
) -> dict[str, Any]:
    """Scanner fields of the ``_ct.json`` sidecar; a broken sidecar is reported, not fatal."""
    if scan.sidecar is None:
        return {}
    try:
        with blame(scan.sidecar, "reading the sidecar"):
            data = _sidecar_fields(scan.sidecar, limits)
    except InputError as e:
        result.flag_error(e, root, table=SCANS.name)
        return {}
    return data


def _sidecar_fields(path: SourceFile, limits: InputLimits) -> dict[str, Any]:
    data = read_json(path, limits, "sidecar", what="sidecar ")
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
