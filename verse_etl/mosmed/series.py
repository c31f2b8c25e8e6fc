"""The ``series`` row of a MosMed DICOM series (``schemas/series.py``): identity, allow-listed
scanner tags, geometry checks and verdict; the store's columns are filled once it is written."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from verse_etl.geometry.series import SeriesGeometry
from verse_etl.io.dicom import SERIES_TAGS
from verse_etl.schemas.series import SERIES

_NUMERIC_TAGS = {"kvp", "slice_thickness_mm", "series_number", "gantry_detector_tilt_deg"}


def series_row(
    folder: str, uid: str, headers: list, geometry: SeriesGeometry, source_path: str
) -> dict[str, Any]:
    first = (geometry.slices or geometry.localizers)[0]
    row: dict[str, Any] = {"folder": folder, "series_uid": uid, "study_uid": first.study_uid}
    row["series_uid_derived"] = first.uid_derived
    row["source_path"] = source_path
    for keyword, column in SERIES_TAGS.items():
        value = first.attributes.get(keyword)
        if column in _NUMERIC_TAGS:
            try:
                row[column] = float(value) if value not in (None, "") else None  # type: ignore[arg-type]  # TypeError/ValueError caught below
            except (TypeError, ValueError):
                row[column] = None
        else:
            row[column] = None if value in (None, "") else str(value)
    ps = geometry.pixel_spacing
    checks = asdict(geometry.checks)
    row.update(
        transfer_syntax=first.transfer_syntax,
        n_files=len(headers),
        n_localizers=len(geometry.localizers),
        n_slices=len(geometry.slices),
        rows=first.rows,
        columns=first.columns,
        spacing_row_mm=ps[0] if ps else None,
        spacing_col_mm=ps[1] if ps else None,
        slice_step_mm=geometry.slice_step_mm,
        spacing_slice_mm=geometry.slice_spacing_mm if geometry.is_volume else None,
        orientation=geometry.orientation,
        affine=None,
        store_affine=None,
        tilt_deg=geometry.tilt_deg,
        rescale_slope=first.slope,
        rescale_intercept=first.intercept,
        **checks,
        missing_slices=geometry.missing_slices,
        instance_order=geometry.instance_order,
        verdict=geometry.verdict,
        findings=",".join(geometry.findings),
        is_volume=False,
        problems="; ".join(geometry.problems),
        correction=None,
        acquired_positions_mm=None,
        annotated=False,
        store_path=None,
        voxel_xxh3=None,
        hu_min=None,
        hu_max=None,
    )
    return SERIES.row(row)
