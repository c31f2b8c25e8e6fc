"""Volume stores: OME-Zarr (NGFF 0.5 on Zarr v3, sharded) written from slab streams, published atomically.

One store per scan or series (``<id>.zarr``)::

    <id>.zarr/                 group: ome.multiscales (the CT) + verse_etl (affine, orientation)
      0/ 1/ 2/                 CT, int16 as in the source, then every second voxel per level
      labels/                  group: ome.labels = ["vertebrae"]
        vertebrae/             group: ome.multiscales + ome.image-label (colours, level names)
          0/ 1/ 2/             uint8 labels

Arrays are stored in the store frame (:mod:`verse_etl.geometry.store_frame`): the source's voxel grid
with its axes permuted and flipped so that index 0, 1, 2 grow toward superior, posterior and the
patient's left, the right way up in a viewer. Sources stream along their slowest axis, which may
be any store axis, in either direction; the writer (:class:`verse_etl.stores.shards.ShardWriter`) stages
rows along that axis. :mod:`verse_etl.ngff` says how the NGFF scale and translation relate to
the store affine. Every array is sharded (``params.yaml: volumes``): small chunks for random access
grouped into a few shard files, so a scan is a handful of files for DVC.

Slabs are encoded on ``threads`` threads while the caller decodes the next slab (both release
the GIL); see :mod:`verse_etl.stores.shards` for why the chunks are written without zarr-python, and
how ``verify`` proves that every chunk of every shard file decodes to the source voxels.

Stores are written into ``<id>.zarr.tmp-<pid>`` beside the final path and renamed into place only
when complete: a reader never sees a half-written store at the final path, and leftovers of a
killed process are removed by the next writer of the same store.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import xxhash
import zarr
from zarr.codecs import BloscCodec, BloscShuffle, BytesCodec, TransposeCodec

from verse_etl import ngff
from verse_etl.errors import InputError
from verse_etl.geometry.store_frame import StoreFrame, frame_of_attributes
from verse_etl.io.atomic import new_folder
from verse_etl.params import VolumeParams
from verse_etl.paths import IMAGE_PATH, LABELS_PATH  # noqa: F401  (re-exported: store layout)
from verse_etl.stores.shards import (
    ArrayLayout,
    ChunkCodec,
    Hooks,
    ShardWriter,
    SlabReader,
    StoreMismatchError,
    Workers,
    encoded_order,
)

SLAB_BYTES = 16 << 20
"""Bytes of one slab read from a source: the unit of streaming (twice staged by the writer)."""


@dataclass(frozen=True)
class ArrayInfo:
    """What was written for one array of a store (level 0; ``levels`` lists every level)."""

    name: str
    shape: tuple[int, int, int]
    dtype: str
    chunks: tuple[int, int, int]
    shards: tuple[int, int, int]
    voxel_xxh3: str
    verified: bool = False
    levels: tuple[tuple[int, int, int], ...] = ()


def slab_depth(shape: tuple[int, int, int], dtype: np.dtype | type) -> int:
    """Slices per slab to read from a source so that a slab holds about ``SLAB_BYTES``.

    Examples
    --------
    >>> slab_depth((512, 512, 300), np.int16), slab_depth((512, 512, 229), np.float64)
    (32, 8)
    """
    slice_bytes = shape[0] * shape[1] * np.dtype(dtype).itemsize
    return max(1, min(shape[2], SLAB_BYTES // max(slice_bytes, 1)))


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


def _codec(params: VolumeParams, itemsize: int) -> ChunkCodec:
    return ChunkCodec(
        cname=params.codec,
        clevel=params.level,
        # Byte shuffling a single byte changes nothing: say so in the metadata.
        shuffle="noshuffle"
        if params.shuffle == "shuffle" and itemsize == 1
        else str(params.shuffle),
        blocksize=params.blocksize,
        typesize=itemsize,
    )


def _zarr_codecs(codec: ChunkCodec, frame: StoreFrame) -> dict[str, Any]:
    """The same codec chain as zarr-python objects, for the ``zarr.json`` of each array."""
    return {
        "filters": [TransposeCodec(order=encoded_order(frame))],
        "serializer": BytesCodec(endian="little"),
        "compressors": BloscCodec(
            cname=codec.cname,  # type: ignore[arg-type]  # one of params.CODECS, checked on load
            clevel=codec.clevel,
            shuffle=BloscShuffle(codec.shuffle),
            typesize=codec.typesize,
            blocksize=codec.blocksize,
        ),
    }


class StoreWriter:
    """Write one OME-Zarr store beside ``final`` and publish it with a rename.

    Use as a context manager: on a clean exit the temporary store replaces ``final``; on an
    exception it is deleted and ``final`` is left as it was.

    Parameters
    ----------
    final
        Where the store appears when complete (``<id>.zarr``).
    params
        Layout, codec, pyramid, threads and verification.
    attributes
        Attributes of the root group (e.g. ``verse_etl``: affine, orientation, provenance).
    affine
        4x4 source voxel -> RAS+ mm, for the NGFF scale and translation; None means 1 mm voxels
        at the origin.
    frame
        How the source's axes become the store's (:func:`verse_etl.geometry.store_frame.store_frame` of
        the source affine and shape); None stores the arrays in the source's axis order.
        Every array of the store is written in this frame.
    """

    def __init__(
        self,
        final: Path,
        params: VolumeParams,
        attributes: dict[str, Any],
        *,
        affine: np.ndarray | None = None,
        frame: StoreFrame | None = None,
    ) -> None:
        self.final = final
        self.params = params
        self.tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
        self.attributes = attributes
        self.source_affine = np.eye(4) if affine is None else np.asarray(affine, dtype=float)
        self.frame = frame
        self.affine = (
            self.source_affine if frame is None else frame.store_affine(self.source_affine)
        )
        self.arrays: list[ArrayInfo] = []
        self._group: zarr.Group | None = None
        self._labels: list[str] = []

    def __enter__(self) -> StoreWriter:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(self.final)
        new_folder(self.tmp)  # never a link planted under the temporary name
        self._group = zarr.open_group(self.tmp, mode="w", zarr_format=3, attributes=self.attributes)
        return self

    def write_array(
        self,
        name: str,
        shape: tuple[int, int, int],
        dtype: np.dtype,
        slabs: Iterable[tuple[int, np.ndarray]],
        attributes: dict[str, Any] | None = None,
        *,
        label_names: Mapping[int, str] | None = None,
        on_slab: Callable[[int, np.ndarray], None] | None = None,
        statistics: VoxelStatistics | None = None,
    ) -> ArrayInfo:
        """Stream ``(k0, slab)`` pairs of the source into array ``name`` and its pyramid; return
        what was written.

        ``name`` is ``"0"`` (the image; the root group gets its NGFF multiscales) or
        ``"labels/<label image>/0"`` (a label image; give ``label_names``, value -> name).
        ``shape`` is the source's; slabs run along its last axis, in order, with any depth and
        memory order; their dtype must cast safely to ``dtype``. The array is stored in the
        writer's frame. ``on_slab(k0, row)`` is called with every staged row (source order, a
        slab one chunk deep along the store's stream axis, in the array's dtype), in stream
        order, on the writer's in-order thread rather than the caller's, e.g. for statistics:
        the decoding thread does nothing but decode. The row is only valid during the call; an
        exception raised there aborts the write. ``statistics`` (e.g.
        :class:`~verse_etl.stores.hu_histogram.HuHistogram`) sees every voxel of level 0 once: for an
        integer dtype, chunk by chunk on the encoder threads, in the same pass that gathers and
        encodes each chunk (``add_chunk``, concurrent, in no order); for a float dtype, whose
        sums depend on the order, row by row in stream order (``add``).

        The XXH3-128 digest of the voxels is taken over the rows in stream order (source
        Fortran order, native byte order), so it equals the digest of the source's raw voxel
        block (``xxhash.xxh3_128_hexdigest`` of its bytes) whatever the store frame.

        Raises
        ------
        InputError
            With check ``store_verify`` if (with ``verify``) a chunk does not decode to the
            source voxels or a shard file does not read back as written.
        """

        def feed(writer: ShardWriter) -> None:
            _pump(writer, shape, writer.dtype, slabs)

        return self._write(name, shape, dtype, feed, attributes, label_names, on_slab, statistics)

    def write_reader(
        self,
        name: str,
        shape: tuple[int, int, int],
        reader: SlabReader,
        attributes: dict[str, Any] | None = None,
        *,
        label_names: Mapping[int, str] | None = None,
        on_slab: Callable[[int, np.ndarray], None] | None = None,
        statistics: VoxelStatistics | None = None,
    ) -> ArrayInfo:
        """As :meth:`write_array`, from a :class:`~verse_etl.stores.shards.SlabReader` (e.g.
        :class:`~verse_etl.io.nifti.NiftiVoxelReader`) that decodes straight into the staging
        rows: no copy on the decoding thread. The array's dtype is the reader's; a reader that
        is a context manager is entered here."""

        def feed(writer: ShardWriter) -> None:
            with contextlib.ExitStack() as stack:
                if isinstance(reader, contextlib.AbstractContextManager):
                    stack.enter_context(reader)  # e.g. opens the file
                writer.pull(reader)

        return self._write(
            name, shape, reader.dtype, feed, attributes, label_names, on_slab, statistics
        )

    def _write(
        self,
        name: str,
        shape: tuple[int, int, int],
        dtype: np.dtype,
        feed: Callable[[ShardWriter], None],
        attributes: dict[str, Any] | None,
        label_names: Mapping[int, str] | None,
        on_slab: Callable[[int, np.ndarray], None] | None,
        statistics: VoxelStatistics | None,
    ) -> ArrayInfo:
        """Create the arrays of every level, then stream level 0 (``feed``) through them."""
        assert self._group is not None, "use StoreWriter as a context manager"
        dtype = np.dtype(dtype).newbyteorder("=")
        if dtype.byteorder == ">" or (dtype.byteorder == "=" and np.little_endian is False):
            raise ValueError(f"{self.final}: big-endian hosts are not supported")
        parent, _, level0 = name.rpartition("/")
        if level0 != "0":
            raise ValueError(
                f"array name {name!r} must end with level '0' (e.g. '0', 'labels/x/0')"
            )
        frame = self.frame or StoreFrame.identity(shape)
        if frame.shape != tuple(shape):
            raise ValueError(f"{self.final}: array of {shape} in a store framed for {frame.shape}")
        is_label = parent.startswith("labels/")
        group = self._prepare_group(parent, is_label, label_names)
        source_shapes = ngff.level_shapes(shape, self.params.pyramid_levels)
        codec = _codec(self.params, dtype.itemsize)
        digest = xxhash.xxh3_128()
        hooks = Hooks(digest=digest, on_row=on_slab)
        if statistics is not None and dtype.kind in "iu":
            hooks = Hooks(digest=digest, on_row=on_slab, on_chunk=statistics.add_chunk)
        elif statistics is not None:
            hooks = Hooks(digest=digest, on_row=_in_order_statistics(statistics, on_slab))
        nice = (self.params.encoder_nice,)
        with (
            ThreadPoolExecutor(
                self.params.threads, "zarr-encode", initializer=lower_priority, initargs=nice
            ) as pool,
            ThreadPoolExecutor(
                1, "zarr-shards", initializer=lower_priority, initargs=nice
            ) as serial,
        ):
            writer = self._level_writers(
                group,
                parent,
                source_shapes,
                frame,
                dtype,
                codec,
                attributes,
                Workers(pool, serial),
                hooks,
            )
            try:
                feed(writer)
                writer.finish()
            except StoreMismatchError as e:
                writer.abort()
                raise InputError(
                    self.final,
                    f"store does not read back as the source voxels ({e})",
                    "rerun the build; if it recurs, check the disk and the Blosc build",
                    check="store_verify",
                ) from e
            except BaseException:
                writer.abort()
                raise
        chunks, shards = layout(frame.store_shape, self.params)
        info = ArrayInfo(
            name=name,
            shape=frame.store_shape,
            dtype=dtype.name,
            chunks=chunks,  # type: ignore[arg-type]  # 3 per axis (layout()): typed variable-length
            shards=shards,  # type: ignore[arg-type]  # 3 per axis (layout()): typed variable-length
            voxel_xxh3=digest.hexdigest(),
            verified=self.params.verify,
            levels=tuple(StoreFrame(frame.axes, frame.flips, s).store_shape for s in source_shapes),
        )
        self.arrays.append(info)
        return info

    def _level_writers(
        self,
        group: zarr.Group,
        parent: str,
        source_shapes: list[tuple[int, int, int]],
        frame: StoreFrame,
        dtype: np.dtype,
        codec: ChunkCodec,
        attributes: dict[str, Any] | None,
        workers: Workers,
        hooks: Hooks,
    ) -> ShardWriter:
        """The ``zarr.json`` of every level, and the chain of writers (level 0 feeds level 1...)."""
        writer: ShardWriter | None = None
        for level in reversed(range(len(source_shapes))):
            level_frame = StoreFrame(frame.axes, frame.flips, source_shapes[level])
            shape = level_frame.store_shape
            chunks, shards = layout(shape, self.params)
            group.create_array(
                str(level),
                shape=shape,
                dtype=dtype,
                chunks=chunks,
                shards=shards,
                fill_value=0,
                dimension_names=ngff.NGFF_AXES,
                attributes=(attributes or {}) if level == 0 else {},
                **_zarr_codecs(codec, level_frame),
            )
            array = ArrayLayout(
                self.tmp / parent / str(level),
                shape,
                dtype,
                chunks,  # type: ignore[arg-type]  # three axes: tuple() is typed variable-length
                shards,  # type: ignore[arg-type]  # three axes: tuple() is typed variable-length
                codec,
                level_frame,
            )
            writer = ShardWriter(
                array,
                workers,
                hooks=hooks if level == 0 else None,
                verify=self.params.verify,
                child=writer,
            )
        assert writer is not None
        return writer

    def _prepare_group(
        self, parent: str, is_label: bool, label_names: Mapping[int, str] | None
    ) -> zarr.Group:
        assert self._group is not None
        levels = self.params.pyramid_levels
        if not parent:
            self._group.update_attributes(ngff.image_attributes("image", self.affine, levels))
            return self._group
        if is_label:
            label = parent.split("/", 1)[1]
            self._labels.append(label)
            self._group.require_group("labels").update_attributes(
                ngff.labels_group_attributes(self._labels)
            )
            return self._group.require_group(parent).update_attributes(
                ngff.label_image_attributes(label, self.affine, levels, label_names or {})
            )
        return self._group.require_group(parent).update_attributes(
            ngff.image_attributes(parent, self.affine, levels)
        )

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        publish(self.tmp, self.final)


class VoxelStatistics(Protocol):
    """Statistics fed while an array is written (:meth:`StoreWriter.write_array`)."""

    def add(self, values: np.ndarray, /) -> None:
        """Take the next slab, in stream order (float volumes)."""

    def add_chunk(self, values: np.ndarray, /) -> None:
        """Take one chunk's voxels, from any thread, in any order (integer volumes)."""


def _in_order_statistics(
    statistics: VoxelStatistics, on_slab: Callable[[int, np.ndarray], None] | None
) -> Callable[[int, np.ndarray], None]:
    def hook(k0: int, row: np.ndarray) -> None:
        statistics.add(row)
        if on_slab is not None:
            on_slab(k0, row)

    return hook


def lower_priority(nice: int) -> None:
    """Add ``nice`` to the niceness of the calling thread (Linux: niceness is per thread).

    The encoder threads call it when they start: the decoding thread, whose speed is the
    store's, then gets a core whenever it can run, and the encoders take the rest (they wait
    for it anyway once the staging rows are encoded). Elsewhere, or if refused, it does nothing.
    """
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))


def _pump(
    writer: ShardWriter,
    shape: tuple[int, int, int],
    dtype: np.dtype,
    slabs: Iterable[tuple[int, np.ndarray]],
) -> None:
    """Feed the source slabs to ``writer`` in order, checking that they tile the array exactly."""
    expected = 0
    for k0, slab in slabs:
        if k0 != expected or slab.shape[:2] != shape[:2]:
            raise ValueError(f"slab at {k0} does not continue the stream (expected {expected})")
        if not np.can_cast(slab.dtype, dtype, "safe"):
            raise ValueError(f"slab of dtype {slab.dtype} cannot be stored as {dtype} without loss")
        writer.push_source(k0, slab)
        expected = k0 + slab.shape[2]
    if expected != shape[2]:
        raise ValueError(f"stream stopped at slice {expected} of {shape[2]}")


def remove_stale(final: Path) -> None:
    """Delete leftovers of writers of ``final`` that were killed (their process is gone).

    A temporary ``<name>.tmp-<pid>`` or ``<name>.old-<pid>`` of a live process is kept: it may
    still be working on it.
    """
    for path in final.parent.glob(f"{final.name}.*-*"):
        kind, _, pid = path.name[len(final.name) + 1 :].partition("-")
        if kind in ("tmp", "old") and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftover from an earlier attempt in this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        # Fast path: a cast to uint8 that compares equal to the source proves every value a whole
        # number in 0..255 (NaN, infinities, fractions and out-of-range values all differ), in
        # two passes and one uint8 temporary instead of a float64 rint copy and boolean masks.
        with np.errstate(invalid="ignore", over="ignore"):
            labels = slab.astype(np.uint8)
        if np.array_equal(labels, slab):
            yield k0, labels
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
    """Open one array of a published store read-only (store frame: superior, posterior, left)."""
    return zarr.open_array(store / name, mode="r")


def read_source_order(store: Path, name: str = IMAGE_PATH) -> np.ndarray:
    """A whole array of a published store, in its source's voxel order (the order of the source
    NIfTI or DICOM grid; the store holds it permuted and flipped:
    :mod:`verse_etl.geometry.store_frame`)."""
    attributes = zarr.open_group(store, mode="r").attrs.get("verse_etl", {})
    array = np.asarray(open_array(store, name)[...])
    if not isinstance(attributes, dict) or "source_shape" not in attributes:
        return array
    return frame_of_attributes(attributes).to_source(array)
