"""Read a built dataset from Python without knowing its file layout.

::

    ds = Dataset("data/build")
    case = ds["verse004"]
    case.image.shape, case.affine.shape        # ((161, 338, 61), (4, 4))
    case.vertebrae[["level", "centroid_x_mm"]]

Volumes are opened lazily as Zarr arrays (``numpy.asarray(case.image)`` or slicing reads only the
chunks needed), so a PyTorch-style ``Dataset`` can index this one without copying volumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from verse_etl.catalog import connect
from verse_etl.errors import InputError
from verse_etl.paths import table_dir
from verse_etl.volumes import IMAGE_PATH, LABELS_PATH


@dataclass(frozen=True)
class Case:
    """One scan (VerSe) or series (MosMed) of a built dataset. Volumes load on access."""

    id: str
    source: str
    store: Path
    affine: np.ndarray  # voxel (i, j, k) -> RAS+ mm
    metadata: pd.Series  # its row of scans or series
    vertebrae: pd.DataFrame  # VerSe: vertebrae rows; MosMed: keypoint rows (mosmed_vertebrae)
    fracture_grades: pd.DataFrame  # VerSe'19 grades where the table exists, else empty

    @property
    def image(self) -> zarr.Array:
        """The CT in HU, native dtype (int16), axes as in ``affine``."""
        return zarr.open_array(self.store / IMAGE_PATH, mode="r")

    @property
    def mask(self) -> zarr.Array | None:
        """The vertebra label image (uint8, VerSe label map), or None if the case has none."""
        path = self.store / LABELS_PATH
        return zarr.open_array(path, mode="r") if path.exists() else None

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size along each array axis."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]


class Dataset:
    """A built verse-etl dataset (after ``dvc repro`` or ``dvc pull``) as a mapping of cases.

    ``ids`` lists VerSe scan ids, then MosMed SeriesInstanceUIDs of converted series; index with
    an id or an integer position (``len(ds)``, ``ds[0]``), as a PyTorch ``Dataset`` does.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if (
            not table_dir(self.path, "scans").is_dir()
            and not table_dir(self.path, "series").is_dir()
        ):
            raise InputError(
                self.path,
                "not a built dataset (expected tables/scans/ or tables/series/)",
                "run `dvc pull` or `dvc repro` first",
                check="dataset",
            )

    @cached_property
    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table of the build, read once."""
        con = connect(self.path)
        try:
            names = [
                row[0]
                for row in con.execute(
                    "SELECT view_name FROM duckdb_views() WHERE NOT internal"
                ).fetchall()
            ]
            return {name: con.execute(f"SELECT * FROM {name}").df() for name in sorted(names)}
        finally:
            con.close()

    @cached_property
    def ids(self) -> list[str]:
        """Case ids: VerSe scans, then converted MosMed series."""
        scans = self.tables.get("scans", pd.DataFrame(columns=["scan_id"]))
        series = self.tables.get("series", pd.DataFrame(columns=["series_uid", "store_path"]))
        return list(scans["scan_id"]) + list(series.loc[series["store_path"].notna(), "series_uid"])

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self):
        return (self[i] for i in self.ids)

    def __getitem__(self, key: str | int) -> Case:
        case_id = self.ids[key] if isinstance(key, int) else key
        scans, series = self.tables.get("scans"), self.tables.get("series")
        if scans is not None and case_id in set(scans["scan_id"]):
            row = scans.set_index("scan_id").loc[case_id]
            vertebrae = self.tables["vertebrae"]
            grades = self.tables.get("verse_fracture_grades", pd.DataFrame(columns=["scan_id"]))
            return Case(
                id=case_id,
                source="verse",
                store=self.path / row["store_path"],
                affine=np.asarray(row["affine"], dtype=float).reshape(4, 4),
                metadata=row,
                vertebrae=vertebrae[vertebrae["scan_id"] == case_id].reset_index(drop=True),
                fracture_grades=grades[grades["scan_id"] == case_id].reset_index(drop=True),
            )
        if series is not None and case_id in set(series["series_uid"]):
            row = series.set_index("series_uid").loc[case_id]
            if row["store_path"] is None or pd.isna(row["store_path"]):
                raise KeyError(f"{case_id}: series was not converted ({row['problems']})")
            keypoints = self.tables.get("mosmed_vertebrae", pd.DataFrame(columns=["series_uid"]))
            return Case(
                id=case_id,
                source="mosmed",
                store=self.path / row["store_path"],
                affine=np.asarray(row["affine"], dtype=float).reshape(4, 4),
                metadata=row,
                vertebrae=keypoints[keypoints["series_uid"] == case_id].reset_index(drop=True),
                fracture_grades=pd.DataFrame(),
            )
        raise KeyError(f"{self.path}: no case {case_id!r} (see Dataset.ids)")
