"""One MosMed series' store: a clean volume streamed into OME-Zarr, or a tilted or unevenly
spaced series resampled onto a regular grid first, with what the rows read from the writing
(the voxel digest, the HU range).

A store depends only on the series' own DICOM files (their digests, or the archive's for a
study packed as ``.tar.gz``, with the member names), the volume parameters, the geometry
tolerances and ``mosmed.tilt`` (which decide the slices' order and the resampling grid), the
input limits, and the code of this module's closure (the DICOM readers, the series checks, the
resampling, the writer); not on the annotation files nor the code that builds rows from them.
Its key (:func:`series_store_key`) is made of exactly those and names the store
(``<Folder>/<SeriesInstanceUID>.<store key>.zarr``); the study keeps the statistics beside its
rows (``CaseResult.stores``), so a study rebuilt for another reason (an annotation file
changed, the code of the keypoint rows) reuses each store whose key is unchanged instead of
converting the series again (:func:`reusable_store`). A store is never written over by a store
of other inputs: another key names another store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from verse_etl.cases.hashing import case_code_identity, fingerprint
from verse_etl.geometry.series import GeometryTolerances, SeriesGeometry
from verse_etl.geometry.store_frame import frame_attributes, store_frame
from verse_etl.geometry.tilt import TiltGrid, iter_resampled, tilt_grid
from verse_etl.io.dicom import SeriesReader, read_slice_hu
from verse_etl.params import InputLimits, MosmedParams, VolumeParams
from verse_etl.paths import mosmed_store_path
from verse_etl.stores.hu_histogram import HuRange
from verse_etl.stores.reuse import reusable
from verse_etl.stores.volumes import IMAGE_PATH, StoreWriter

SOURCE = "mosmed"
STORE_FORMAT = 1
"""Bump when what a store or its saved statistics hold changes meaning without a code change of
this module's closure."""


def store_code_identity() -> str:
    """Code identity (:func:`verse_etl.cases.hashing.code_identity`) of this module's closure:
    what checks, resamples and writes a series' store, and nothing that only builds rows."""
    return case_code_identity(__name__)


@dataclass(frozen=True)
class SeriesStore:
    """A written (or reused) store of one series and what its writing gave."""

    key: str  # series_store_key
    store_path: str  # relative to the build root
    voxel_xxh3: str
    hu_min: float
    hu_max: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as kept in ``CaseResult.stores``."""
        return {"format": STORE_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SeriesStore | None:
        """The store kept by :meth:`to_dict`; None if it is of another format or unreadable."""
        try:
            if data.get("format") != STORE_FORMAT:
                return None
            return cls(
                key=str(data["key"]),
                store_path=str(data["store_path"]),
                voxel_xxh3=str(data["voxel_xxh3"]),
                hu_min=float(data["hu_min"]),
                hu_max=float(data["hu_max"]),
            )
        except (AttributeError, KeyError, TypeError, ValueError):
            return None


def series_sources(
    names: Sequence[str], hashes: dict[str, str], archive: str | None
) -> dict[str, Any]:
    """What a series' store reads, for its key: the sha256 of each of its files (``names``,
    relative to the source root, as in ``hashes``); for a study in an archive, the archive's
    sha256 and the member names (the members are not hashed one by one). A file without a
    digest makes every image file of the study count (never a key that misses an input)."""
    if archive is not None:
        return {"archive": {archive: hashes[archive]}, "members": sorted(names)}
    if any(n not in hashes for n in names):
        return {"study": dict(hashes)}
    return {n: hashes[n] for n in sorted(names)}


def series_store_key(
    folder: str,
    series_uid: str,
    sources: dict[str, Any],
    volumes: VolumeParams,
    tolerances: GeometryTolerances,
    tilt: str,
    limits: InputLimits,
) -> str:
    """Key of a series' store: exactly what its bytes and statistics depend on (``sources``
    from :func:`series_sources`; ``tilt`` is ``mosmed.tilt``)."""
    return fingerprint(
        STORE_FORMAT,
        store_code_identity(),
        folder,
        series_uid,
        sources,
        volumes,
        tolerances,
        tilt,
        limits,
    )


def reusable_store(
    kept: dict[str, dict[str, Any]],
    folder: str,
    series_uid: str,
    key: str,
    out: Path,
    store_exists: Callable[[Path], bool],
) -> SeriesStore | None:
    """The store ``kept`` (a saved result's ``stores``) holds under ``key`` if it is still there,
    complete, in ``out``; else None: the series is converted again."""
    path = mosmed_store_path(out, folder, series_uid, key)
    entry = kept.get(path.relative_to(out).as_posix())
    return reusable(entry, SeriesStore.from_dict, key, path, out, store_exists)


_CORRECTABLE = frozenset({"gantry_tilt", "uneven_spacing"})
"""Findings that resampling corrects: everything else about the series must be clean. Missing
slices are lost data, not geometry: they are reported, never interpolated over."""


def resampling_grid(geometry: SeriesGeometry, params: MosmedParams) -> TiltGrid | None:
    """The regular grid a sheared or irregular series is resampled to, or None (clean volume,
    another problem, or mosmed.tilt = report)."""
    if params.tilt != "correct" or geometry.is_volume or len(geometry.slices) < 3:
        return None
    if not geometry.findings or not set(geometry.findings) <= _CORRECTABLE:
        return None
    grid = tilt_grid(geometry.slices, params.in_plane_tolerance_mm, params.slice_tolerance_mm)
    return grid if grid.corrections else None


def write_clean_store(
    out: Path,
    geometry: SeriesGeometry,
    volumes: VolumeParams,
    folder: str,
    uid: str,
    key: str,
) -> SeriesStore:
    """Stream a clean series into the store named by ``key``; its voxel digest and HU range."""
    store = mosmed_store_path(out, folder, uid, key)
    frame = store_frame(geometry.affine, geometry.shape)  # type: ignore[arg-type]  # a clean volume: affine and shape set
    attributes = {
        "verse_etl": {
            "source": SOURCE,
            "folder": folder,
            "series_uid": uid,
            **frame_attributes(geometry.affine, frame),  # type: ignore[arg-type]  # a clean volume: affine set
            "source_axes": "[row, column, slice]; slices sorted by position along the slice "
            "normal; source_affine maps them to RAS+ mm (RAS = diag(-1, -1, 1) x DICOM LPS)",
            "instance_numbers": [s.instance_number for s in geometry.slices],
        }
    }
    hu = HuRange()  # taken chunk by chunk on the encoder threads, in the encoding pass
    with StoreWriter(store, volumes, attributes, affine=geometry.affine, frame=frame) as writer:
        # The reader decodes straight into the writer's staging rows (no copy on this thread).
        reader = SeriesReader(geometry.slices)
        info = writer.write_reader(IMAGE_PATH, geometry.shape, reader, statistics=hu)
    return SeriesStore(
        key=key,
        store_path=store.relative_to(out).as_posix(),
        voxel_xxh3=info.voxel_xxh3,
        hu_min=hu.minimum,
        hu_max=hu.maximum,
    )


def write_resampled_store(
    out: Path,
    geometry: SeriesGeometry,
    grid: TiltGrid,
    volumes: VolumeParams,
    folder: str,
    uid: str,
    key: str,
) -> SeriesStore:
    """Resample the series onto ``grid`` slab by slab into the store named by ``key``
    (:mod:`verse_etl.geometry.tilt`); its voxel digest and HU range."""
    store = mosmed_store_path(out, folder, uid, key)
    # dcm2niix fills what no acquired slice covers with the lowest value of the series: one
    # decoding pass for it (a slice at a time), then the resampling pass.
    fill = min(int(read_slice_hu(h).min()) for h in geometry.slices)
    frame = store_frame(grid.affine, grid.shape)
    attributes = {
        "verse_etl": {
            "source": SOURCE,
            "folder": folder,
            "series_uid": uid,
            **frame_attributes(grid.affine, frame),
            "source_axes": "[row, column, slice] of the resampled grid: rows along the column "
            "cosines, columns along the row cosines, slices along the normal (no shear); "
            "source_affine maps them to RAS+ mm",
            "correction": list(grid.corrections),
            "acquired_offset_px": list(grid.offset_px),
        }
    }
    low, high = [np.inf], [-np.inf]

    def hu_range(_k0: int, slab: np.ndarray) -> None:
        low[0], high[0] = min(low[0], int(slab.min())), max(high[0], int(slab.max()))

    slabs = iter_resampled(grid, lambda i: read_slice_hu(geometry.slices[i]), fill)
    with StoreWriter(store, volumes, attributes, affine=grid.affine, frame=frame) as writer:
        info = writer.write_array(
            IMAGE_PATH, grid.shape, np.dtype(np.int16), slabs, on_slab=hu_range
        )
    return SeriesStore(
        key=key,
        store_path=store.relative_to(out).as_posix(),
        voxel_xxh3=info.voxel_xxh3,
        hu_min=float(low[0]),
        hu_max=float(high[0]),
    )
