"""Build one MosMed study: every clean CT series to a Zarr store, series and keypoint rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from verse_etl import __version__
from verse_etl.annotations import POINT_NAMES, AnnotationFile, read_annotation
from verse_etl.errors import InputError
from verse_etl.geometry import axcodes
from verse_etl.hashing import fingerprint, sha256_file
from verse_etl.io.dicom import SeriesGeometry, SeriesReader, order_series, scan_folder
from verse_etl.params import VolumeParams
from verse_etl.paths import case_result_path, mosmed_store_path
from verse_etl.records import CaseResult, QuarantineRecord, load_cached, relative, write_text_atomic
from verse_etl.sources.mosmed import MosmedStudy
from verse_etl.volumes import IMAGE_PATH, StoreWriter

SOURCE = "mosmed"


def build_mosmed_study(
    study: MosmedStudy, root: Path, out: Path, volumes: VolumeParams
) -> CaseResult:
    """Convert one study and return its rows; reuse the saved result if nothing changed."""
    files = sorted(p for p in study.dicom_dir.rglob("*") if p.is_file()) if study.dicom_dir else []
    if study.annotation_path:
        files.append(study.annotation_path)
    hashes = {relative(p, root): sha256_file(p) for p in files}
    key = fingerprint(__version__, hashes, volumes)
    cache = case_result_path(out, SOURCE, study.folder)
    cached = load_cached(cache, key)
    if cached is not None and all(
        (out / row["store_path"]).exists()
        for row in cached.rows.get("series", [])
        if row["store_path"]
    ):
        return cached
    result = CaseResult(source=SOURCE, case_id=study.folder, fingerprint=key)
    annotation = _read_annotation(study, root, result)
    series_store: dict[str, str] = {}
    if study.dicom_dir is None:
        if annotation is not None:
            _quarantine(
                result,
                root,
                study.annotation_path,
                "study_missing",  # type: ignore[arg-type]
                f"no study folder dicom/{study.folder} for this annotation; "
                f"{len(annotation.vertebrae)} annotated vertebrae left out",
                table="mosmed_vertebrae",
            )
    else:
        series_store = _convert_series(study, root, out, volumes, annotation, result)
    if annotation is not None and study.dicom_dir is not None:
        if annotation.series_uid not in series_store:
            _quarantine(
                result,
                root,
                annotation.path,
                "series_missing",
                f"no convertible series with SeriesInstanceUID {annotation.series_uid!r} in "
                f"dicom/{study.folder}; {len(annotation.vertebrae)} annotated vertebrae left out",
                table="mosmed_vertebrae",
            )
        else:
            _add_vertebrae(result, annotation, root, series_store[annotation.series_uid])
    write_text_atomic(cache, result.to_json())
    return result


def _read_annotation(study: MosmedStudy, root: Path, result: CaseResult) -> AnnotationFile | None:
    if study.annotation_path is None:
        return None
    try:
        annotation = read_annotation(study.annotation_path)
    except InputError as e:
        result.quarantine.append(
            QuarantineRecord.from_error(e, SOURCE, study.folder, root, "mosmed_vertebrae")
        )
        return None
    if annotation.folder != study.folder:
        _quarantine(
            result,
            root,
            annotation.path,
            "annotation_folder",
            f"Folder is {annotation.folder!r} (expected the file stem {study.folder!r})",
            table="mosmed_vertebrae",
        )
        return None
    return annotation


def _quarantine(
    result: CaseResult, root: Path, path: Path, check: str, problem: str, table: str = ""
) -> None:
    rel = relative(path, root)
    result.quarantine.append(
        QuarantineRecord(
            source=SOURCE,
            case_id=result.case_id,
            table=table,
            file=rel,
            check=check,
            reason=f"{rel}: {problem}",
        )
    )


def _convert_series(
    study: MosmedStudy,
    root: Path,
    out: Path,
    volumes: VolumeParams,
    annotation: AnnotationFile | None,
    result: CaseResult,
) -> dict[str, str]:
    """Convert every clean series of the study; return SeriesInstanceUID -> store path."""
    assert study.dicom_dir is not None
    series, ignored, errors = scan_folder(study.dicom_dir)
    for path in ignored:
        _quarantine(result, root, path, "not_dicom", "not a DICOM image file; ignored")
    for error in errors:
        result.quarantine.append(
            QuarantineRecord.from_error(error, SOURCE, study.folder, root, "series")
        )
    stores: dict[str, str] = {}
    for uid in sorted(series):
        slices = series[uid]
        row: dict[str, Any] = _series_row(
            study.folder, uid, slices[0].study_uid, slices[0].attributes, len(slices)
        )
        row["annotated"] = annotation is not None and annotation.series_uid == uid
        try:
            geometry = order_series(slices)
        except InputError as e:
            result.quarantine.append(
                QuarantineRecord.from_error(e, SOURCE, study.folder, root, "series")
            )
            row.update(rows=slices[0].rows, columns=slices[0].columns, problems=e.problem)
            result.add("series", row)
            continue
        row.update(_geometry_columns(geometry))
        if not geometry.is_volume:
            _quarantine(
                result,
                root,
                slices[0].path.parent,
                "dicom_geometry",
                f"series {uid} is not a clean volume ({'; '.join(geometry.problems)}); not converted",
                table="series",
            )
            result.add("series", row)
            continue
        store = mosmed_store_path(out, study.folder, uid)
        try:
            sha = _write_store(store, geometry, volumes, study.folder, uid)
        except InputError as e:
            result.quarantine.append(
                QuarantineRecord.from_error(e, SOURCE, study.folder, root, "series")
            )
            row.update(is_volume=False, problems=str(e))
            result.add("series", row)
            continue
        result.stores_written += 1
        row.update(store_path=relative(store, out), voxel_sha256=sha)
        stores[uid] = row["store_path"]
        result.add("series", row)
    return stores


def _series_row(
    folder: str, uid: str, study_uid: str, attrs: dict[str, Any], n: int
) -> dict[str, Any]:
    def number(name: str) -> float | None:
        try:
            return float(attrs[name]) if attrs.get(name) not in (None, "") else None
        except (TypeError, ValueError):
            return None

    def text(name: str) -> str | None:
        value = attrs.get(name)
        return None if value in (None, "") else str(value)

    return {
        "folder": folder,
        "series_uid": uid,
        "study_uid": study_uid,
        "modality": text("Modality"),
        "manufacturer": text("Manufacturer"),
        "model": text("ManufacturerModelName"),
        "kernel": text("ConvolutionKernel"),
        "kvp": number("KVP"),
        "slice_thickness_mm": number("SliceThickness"),
        "n_slices": n,
        "rows": 0,
        "columns": 0,
        "spacing_row_mm": None,
        "spacing_col_mm": None,
        "slice_step_mm": None,
        "orientation": None,
        "affine": None,
        "tilt_deg": None,
        "is_volume": False,
        "problems": "",
        "annotated": False,
        "store_path": None,
        "voxel_sha256": None,
    }


def _geometry_columns(geometry: SeriesGeometry) -> dict[str, Any]:
    return {
        "rows": geometry.shape[0],
        "columns": geometry.shape[1],
        "spacing_row_mm": geometry.spacing_mm[0],
        "spacing_col_mm": geometry.spacing_mm[1],
        "slice_step_mm": geometry.slice_step_mm,
        "orientation": axcodes(geometry.affine),
        "affine": [float(v) for v in geometry.affine.reshape(-1)],
        "tilt_deg": geometry.tilt_deg,
        "is_volume": geometry.is_volume,
        "problems": "; ".join(geometry.problems),
    }


def _write_store(
    store: Path, geometry: SeriesGeometry, volumes: VolumeParams, folder: str, uid: str
) -> str:
    attributes = {
        "verse_etl": {
            "source": SOURCE,
            "folder": folder,
            "series_uid": uid,
            "affine": [[float(v) for v in row] for row in geometry.affine],
            "orientation": axcodes(geometry.affine),
            "spacing_mm": list(geometry.spacing_mm),
            "axes": "[row, column, slice]; slices sorted by position along the slice normal; "
            "affine maps (row, column, slice) to RAS+ mm",
            "instance_numbers": [s.instance_number for s in geometry.slices],
        }
    }
    with StoreWriter(store, volumes, attributes, affine=geometry.affine) as writer:
        info = writer.write_array(
            IMAGE_PATH, geometry.shape, np.dtype(np.int16), SeriesReader(geometry)
        )
    return info.voxel_sha256


def _add_vertebrae(
    result: CaseResult, annotation: AnnotationFile, root: Path, store_path: str
) -> None:
    for vertebra in annotation.vertebrae:
        row: dict[str, Any] = {
            "folder": annotation.folder,
            "series_uid": annotation.series_uid,
            "release": annotation.release,
            "expert": vertebra.expert,
            "vertebra_index": vertebra.index,
            "level": None,
            "annotation_path": relative(annotation.path, root),
            "store_path": store_path,
        }
        for name, (r, c, k) in zip(POINT_NAMES, vertebra.points, strict=True):
            row[f"{name}_row"], row[f"{name}_col"], row[f"{name}_k"] = r, c, k
        result.add("mosmed_vertebrae", row)
