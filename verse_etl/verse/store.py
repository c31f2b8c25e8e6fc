"""One VerSe scan's store: its CT and mask streamed into OME-Zarr, with the statistics gathered on
the way (voxel digests, the exact HU histogram's figures, the mask's label statistics).

A store depends only on its source files (the CT and the mask), the volume parameters, the input
limits, how the mask is aligned to the CT, and the code of this module's closure (the readers,
the writer, the statistics). Its key (:func:`scan_store_key`) is made of exactly those and names
the store (``<scan>.<store key>.zarr``); the case keeps the statistics beside its rows
(``CaseResult.stores``), so a case rebuilt for another reason (a centroid file changed, a check
parameter, the code of the rows) reuses the store and its statistics when the key is the same
instead of converting the CT and the mask again (:func:`reusable_store`). The store is never
written over: a store under a key holds the bytes that key's inputs and code give.

The mask label at each centroid is read back from the store (:func:`probe_labels`), whether the
store was just written or reused, so both paths give the same rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from verse_etl.cases.hashing import case_code_identity, fingerprint
from verse_etl.errors import blame
from verse_etl.geometry.reorient import AxisMap, iter_aligned_slabs
from verse_etl.geometry.store_frame import StoreFrame, frame_attributes, store_frame
from verse_etl.io.nifti import NiftiInfo, NiftiVoxelReader, iter_nifti_slabs
from verse_etl.levels import VERSE_LEVELS
from verse_etl.params import InputLimits, VolumeParams
from verse_etl.paths import verse_store_path
from verse_etl.stores.hu_histogram import PERCENTILES, HuHistogram
from verse_etl.stores.label_stats import LabelStatistics, LabelSummary
from verse_etl.stores.reuse import reusable
from verse_etl.stores.volumes import (
    IMAGE_PATH,
    LABELS_PATH,
    StoreWriter,
    as_labels,
    layout,
    open_array,
)

SOURCE = "verse"
STORE_FORMAT = 1
"""Bump when what a store or its saved statistics hold changes meaning without a code change of
this module's closure."""
MASK_SLAB_BYTES = 16 << 20
"""Most bytes of source mask read at once (16 MiB: 8 slices of a 512x512 float64 mask)."""


def store_code_identity() -> str:
    """Code identity (:func:`verse_etl.cases.hashing.code_identity`) of this module's closure:
    what writes a scan's store and computes its statistics, and nothing that only builds rows."""
    return case_code_identity(__name__)


@dataclass(frozen=True)
class HuSummary:
    """The figures of a CT's :class:`~verse_etl.stores.hu_histogram.HuHistogram` that the case
    uses (the ``scans`` row's HU columns and the voxel checks), kept to reuse the store."""

    minimum: float
    maximum: float
    mean: float
    n: int
    nonfinite: int
    percentiles: dict[str, float]  # by PERCENTILES, as strings (JSON object keys)

    @classmethod
    def of(cls, hu: HuHistogram) -> HuSummary:
        return cls(
            minimum=hu.minimum,
            maximum=hu.maximum,
            mean=hu.mean,
            n=hu.n,
            nonfinite=hu.nonfinite,
            percentiles={str(q): hu.percentile(q) for q in PERCENTILES},
        )

    def percentile(self, q: int) -> float:
        """The ``q``-th percentile (one of :data:`PERCENTILES`)."""
        return self.percentiles[str(q)]


@dataclass(frozen=True)
class ScanStore:
    """A written (or reused) store of one scan and its statistics."""

    key: str  # scan_store_key
    store_path: str  # relative to the build root
    ct_voxel_xxh3: str
    mask_voxel_xxh3: str | None
    verified: bool
    hu: HuSummary
    labels: tuple[LabelSummary, ...]  # the mask's labels (none without a mask)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as kept in ``CaseResult.stores``."""
        return {"format": STORE_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScanStore | None:
        """The store kept by :meth:`to_dict`; None if it is of another format or unreadable."""
        try:
            if data.get("format") != STORE_FORMAT:
                return None
            labels = tuple(
                LabelSummary(
                    label=int(s["label"]),
                    voxels=int(s["voxels"]),
                    bbox_min=tuple(int(v) for v in s["bbox_min"]),  # type: ignore[arg-type]  # three axes
                    bbox_max=tuple(int(v) for v in s["bbox_max"]),  # type: ignore[arg-type]  # three axes
                    centre_of_mass=tuple(float(v) for v in s["centre_of_mass"]),  # type: ignore[arg-type]  # three axes
                    component_sizes=tuple(int(v) for v in s["component_sizes"]),
                )
                for s in data["labels"]
            )
            return cls(
                key=str(data["key"]),
                store_path=str(data["store_path"]),
                ct_voxel_xxh3=str(data["ct_voxel_xxh3"]),
                mask_voxel_xxh3=data["mask_voxel_xxh3"],
                verified=bool(data["verified"]),
                hu=HuSummary(**data["hu"]),
                labels=labels,
            )
        except (AttributeError, KeyError, TypeError, ValueError):
            return None

    def summaries(self) -> dict[int, LabelSummary]:
        """Label statistics by label, as :meth:`LabelStatistics.result` gives them."""
        return {s.label: s for s in self.labels}


def scan_store_key(
    scan_id: str,
    sources: dict[str, str],
    volumes: VolumeParams,
    limits: InputLimits,
    aligned: AxisMap | None,
) -> str:
    """Key of a scan's store: exactly what its bytes and statistics depend on.

    ``sources`` are the sha256 of the CT and the mask by path relative to the source root;
    ``aligned`` how the mask's axes are mapped onto the CT's (None: the same grid).
    """
    return fingerprint(
        STORE_FORMAT, store_code_identity(), scan_id, sources, volumes, limits, aligned
    )


def reusable_store(
    kept: dict[str, Any] | None,
    scan_id: str,
    key: str,
    out: Path,
    store_exists: Callable[[Path], bool],
) -> ScanStore | None:
    """The kept store ``kept`` if it was made under ``key`` and is still there, complete, in
    ``out`` (where its labels can be read back); else None: the store is written again."""
    path = verse_store_path(out, scan_id, key)
    return reusable(kept, ScanStore.from_dict, key, path, out, store_exists)


def write_scan_store(
    scan_id: str,
    ct: NiftiInfo,
    mask: NiftiInfo | None,
    aligned: AxisMap | None,
    out: Path,
    volumes: VolumeParams,
    key: str,
) -> ScanStore:
    """Stream the CT (and the mask) into the store named by ``key``, with their statistics."""
    hu = HuHistogram()
    stats = LabelStatistics(ct.shape)
    # Stored the right way up for viewers: the CT's axes permuted and flipped (store_frame.py).
    frame = store_frame(ct.affine, ct.shape)
    depth = layout(frame.store_shape, volumes)[1][frame.stream_axis]
    store = verse_store_path(out, scan_id, key)

    def mask_slabs() -> Iterator[tuple[int, np.ndarray]]:
        assert mask is not None
        thin = max(1, MASK_SLAB_BYTES // (mask.shape[0] * mask.shape[1] * mask.dtype.itemsize))
        slabs = (
            iter_aligned_slabs(mask.path, aligned, ct.shape, min(thin, depth))  # type: ignore[arg-type]  # shape of 3 (a NIfTI volume)
            if aligned is not None
            else iter_nifti_slabs(mask, min(thin, depth))
        )
        labels = as_labels(slabs, mask.path)  # type: ignore[arg-type]  # both readers yield (k0, slab)
        for k0, slab in labels:
            stats.add(k0, slab)
            yield k0, slab

    attributes = {
        "verse_etl": {"source": SOURCE, "scan_id": scan_id, **frame_attributes(ct.affine, frame)}
    }
    with StoreWriter(store, volumes, attributes, affine=ct.affine, frame=frame) as writer:
        # The reader decodes straight into the writer's staging rows (no copy on this thread).
        reader = NiftiVoxelReader(ct)
        # The HU histogram is counted chunk by chunk as the encoder threads gather them.
        with blame(ct.path, "converting the CT"):
            ct_array = writer.write_reader(IMAGE_PATH, ct.shape, reader, statistics=hu)
        mask_array = None
        if mask is not None:
            with blame(mask.path, "converting the mask"):
                mask_array = writer.write_array(
                    LABELS_PATH,
                    ct.shape,
                    np.dtype(np.uint8),
                    regroup_slabs(mask_slabs(), ct.shape, depth),
                    attributes={"labels": {str(k): v for k, v in VERSE_LEVELS.items()}},
                    label_names=VERSE_LEVELS,
                )
    return ScanStore(
        key=key,
        store_path=store.relative_to(out).as_posix(),
        ct_voxel_xxh3=ct_array.voxel_xxh3,
        mask_voxel_xxh3=mask_array.voxel_xxh3 if mask_array else None,
        verified=ct_array.verified and (mask_array is None or mask_array.verified),
        hu=HuSummary.of(hu),
        labels=tuple(stats.result().values()) if mask is not None else (),
    )


def probe_labels(
    store: Path, frame: StoreFrame, points: Sequence[tuple[float, float, float]]
) -> list[int | None]:
    """The mask label at each source voxel position (rounded to the nearest voxel, as
    :class:`~verse_etl.stores.label_stats.LabelStatistics` probes), read from the store's label
    array; None for a position outside the volume."""
    if not points:
        return []
    labels = open_array(store, LABELS_PATH)
    found: list[int | None] = []
    for point in points:
        voxel = [math.floor(float(c) + 0.5) for c in point]
        if not all(0 <= v < s for v, s in zip(voxel, frame.shape, strict=True)):
            found.append(None)
            continue
        z, y, x = (round(float(v)) for v in frame.to_store_index([voxel])[0])
        found.append(int(np.asarray(labels[z, y, x]).item()))
    return found


def regroup_slabs(
    slabs: Iterator[tuple[int, np.ndarray]], shape: tuple[int, int, int], depth: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Regroup thin uint8 slabs into slabs of ``depth`` slices (the last may be thinner).

    The yielded array is one reused Fortran-ordered buffer, valid until the next iteration.

    Examples
    --------
    >>> thin = ((k, np.full((2, 2, 1), k, np.uint8)) for k in range(5))
    >>> [(k0, s[0, 0].tolist()) for k0, s in regroup_slabs(thin, (2, 2, 5), 2)]
    [(0, [0, 1]), (2, [2, 3]), (4, [4])]
    """
    buffer = np.empty((shape[0], shape[1], depth), dtype=np.uint8, order="F")
    filled = start = 0
    for _, slab in slabs:
        position = 0
        while position < slab.shape[2]:
            take = min(depth - filled, slab.shape[2] - position)
            buffer[:, :, filled : filled + take] = slab[:, :, position : position + take]
            filled, position = filled + take, position + take
            if filled == depth:
                yield start, buffer
                start, filled = start + depth, 0
    if filled:
        yield start, buffer[:, :, :filled]
