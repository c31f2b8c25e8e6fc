"""Volume stores: chunked, sharded Zarr v3 groups written from slab streams, published atomically.

One store per scan or series (``<id>.zarr``), laid out so that OME-Zarr readers find the image at
``0`` and the vertebra label image at ``labels/vertebrae/0``. Arrays keep the axis order of the
source as stored (``[i, j, k]`` for NIfTI, ``[row, column, slice]`` for DICOM) so that the 4x4
``affine`` attribute maps their indices to RAS+ mm exactly like the source's affine did.

Stores are written into ``<id>.zarr.tmp-<pid>`` beside the final path and renamed into place only
when complete: a reader never sees a half-written store at the final path.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from verse_etl.errors import InputError
from verse_etl.params import VolumeParams

IMAGE_PATH = "0"
LABELS_PATH = "labels/vertebrae/0"


@dataclass(frozen=True)
class ArrayInfo:
    """What was written for one array of a store."""

    name: str
    shape: tuple[int, int, int]
    dtype: str
    chunks: tuple[int, int, int]
    shards: tuple[int, int, int]
    voxel_sha256: str


def layout(
    shape: tuple[int, int, int], params: VolumeParams
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Chunk and shard shapes for an array of ``shape``.

    Chunks never exceed the array; shards are whole multiples of chunks and never exceed the
    array rounded up to whole chunks, so small arrays are one shard.

    Examples
    --------
    >>> layout((512, 512, 300), VolumeParams(chunks=(64, 64, 64), shard_chunks=(8, 8, 2)))
    ((64, 64, 64), (512, 512, 128))
    >>> layout((40, 30, 20), VolumeParams(chunks=(64, 64, 64), shard_chunks=(8, 8, 2)))
    ((40, 30, 20), (40, 30, 20))
    """
    chunks = tuple(min(c, n) for c, n in zip(params.chunks, shape, strict=True))
    shards = tuple(
        min(c * s, math.ceil(n / c) * c)
        for c, s, n in zip(chunks, params.shard_chunks, shape, strict=True)
    )
    return chunks, shards


def _compressor(params: VolumeParams, itemsize: int) -> BloscCodec:
    return BloscCodec(
        cname=params.codec,
        clevel=params.level,
        shuffle=BloscShuffle.shuffle if params.shuffle and itemsize > 1 else BloscShuffle.noshuffle,
        typesize=itemsize,
    )


class StoreWriter:
    """Write one Zarr v3 group beside ``final`` and publish it with a rename.

    Use as a context manager: on a clean exit the temporary store replaces ``final``; on an
    exception it is deleted and ``final`` is left as it was.
    """

    def __init__(self, final: Path, params: VolumeParams, attributes: dict[str, Any]) -> None:
        self.final = final
        self.params = params
        self.tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
        self.attributes = attributes
        self.arrays: list[ArrayInfo] = []
        self._group: zarr.Group | None = None

    def __enter__(self) -> StoreWriter:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self._group = zarr.open_group(self.tmp, mode="w", zarr_format=3, attributes=self.attributes)
        return self

    def write_array(
        self,
        name: str,
        shape: tuple[int, int, int],
        dtype: np.dtype,
        slabs: Iterable[tuple[int, np.ndarray]],
        attributes: dict[str, Any] | None = None,
    ) -> ArrayInfo:
        """Stream ``(k0, slab)`` pairs into array ``name``; return what was written.

        The sha256 of the voxels is taken over the slabs in stream order (Fortran order, native
        byte order), so it equals the hash of the source's raw voxel block.
        """
        assert self._group is not None, "use StoreWriter as a context manager"
        dtype = np.dtype(dtype).newbyteorder("=")
        chunks, shards = layout(shape, self.params)
        array = self._group.create_array(
            name,
            shape=shape,
            dtype=dtype,
            chunks=chunks,
            shards=shards,
            compressors=_compressor(self.params, dtype.itemsize),
            fill_value=0,
            dimension_names=("i", "j", "k"),
            attributes=attributes or {},
        )
        digest = hashlib.sha256()
        expected = 0
        for k0, slab in slabs:
            if k0 != expected or slab.shape[:2] != shape[:2]:
                raise ValueError(f"slab at {k0} does not continue the stream (expected {expected})")
            data = np.asfortranarray(slab, dtype=dtype)
            digest.update(memoryview(data.reshape(-1, order="F")))
            array[:, :, k0 : k0 + data.shape[2]] = data
            expected = k0 + data.shape[2]
        if expected != shape[2]:
            raise ValueError(f"stream stopped at slice {expected} of {shape[2]}")
        info = ArrayInfo(
            name=name,
            shape=shape,
            dtype=dtype.name,
            chunks=chunks,
            shards=shards,  # type: ignore[arg-type]
            voxel_sha256=digest.hexdigest(),
        )
        self.arrays.append(info)
        return info

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        publish(self.tmp, self.final)


def publish(tmp: Path, final: Path) -> None:
    """Move a finished directory ``tmp`` to ``final``, replacing any older version.

    ``rename`` cannot replace a non-empty directory, so the old version is first renamed aside;
    at no moment does ``final`` hold a partial store.
    """
    old = final.with_name(f"{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def as_labels(
    slabs: Iterable[tuple[int, np.ndarray]], path: Path
) -> Iterator[tuple[int, np.ndarray]]:
    """Convert mask slabs (uint8 or float) to uint8 labels, refusing values that are not labels.

    Raises
    ------
    InputError
        If a value is not an integer in 0..255 (e.g. an interpolated float mask).
    """
    for k0, slab in slabs:
        if slab.dtype == np.uint8:
            yield k0, slab
            continue
        if slab.dtype.kind == "f":
            bad = ~np.isfinite(slab) | (slab != np.rint(slab))
            if bad.any():
                value = slab[bad].flat[0].item()
                raise InputError(
                    path,
                    f"mask holds non-integer values (expected whole labels, got e.g. {value!r} in slab at slice {k0})",
                    "labels must be whole numbers; was the mask resampled with interpolation?",
                    check="mask_integral",
                )
        lo, hi = (slab.min(), slab.max()) if slab.size else (0, 0)
        if lo < 0 or hi > 255:
            raise InputError(
                path,
                f"mask labels out of range (expected 0..255, got {lo}..{hi})",
                "check the label map",
                check="mask_range",
            )
        yield k0, slab.astype(np.uint8)


def open_array(store: Path, name: str = IMAGE_PATH) -> zarr.Array:
    """Open one array of a published store read-only."""
    return zarr.open_array(store / name, mode="r")
