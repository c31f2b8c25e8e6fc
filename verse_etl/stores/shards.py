"""Zarr v3 ``sharding_indexed`` arrays written directly: chunks encoded on threads, shards assembled.

Spec: Zarr v3 core (https://zarr-specs.readthedocs.io/en/latest/v3/core/index.html) and the
sharding codec (.../v3/codecs/sharding-indexed/index.html). zarr-python writes this format at a
fraction of the speed of the codec itself (``benchmarks/convert.py`` measures it), so the chunks
are encoded here with the same numcodecs Blosc that zarr-python uses and each shard file is laid
out as the spec says: the encoded chunks back to back, then the index (``offset, nbytes`` as
little-endian uint64 per chunk of the shard, C order, ``2**64 - 1`` for an absent chunk)
followed by its CRC32C. zarr-python writes the ``zarr.json`` metadata and reads the arrays back
bit for bit (tests/unit/stores/test_volumes.py).

Inner codecs of every chunk are ``transpose(order)``, ``bytes(little)``, ``blosc``, with the
transpose order that makes the encoded bytes of a chunk its voxels in the *source's* memory
order (:func:`encoded_order`; ``[2, 1, 0]``, Fortran order, when the store keeps the source's
axes), which is how the NIfTI and DICOM slabs arrive. Gathering a chunk is then a copy of
contiguous runs (several GB/s) instead of a 3-D transposition (about 0.3 GB/s, slower than the
decoder it would follow), whatever axis permutation the store frame applies
(:mod:`verse_etl.geometry.store_frame`).

Layout is pure arithmetic (:func:`grid`, :func:`stream_rows`, :func:`shard_slab_rows`,
:func:`chunk_slices`, :func:`shard_members`, :func:`encoded_order`); :class:`ShardWriter` is the
one scheduler. It streams along any store axis, in either direction (the source's slowest axis
may be any store axis, reversed), and writes each slab of shards as soon as its rows are
encoded, so shard files are written in whatever order the stream completes them. Its entry
points say what feeds it: :meth:`ShardWriter.pull` (a :class:`SlabReader` decoding into the
staging rows), :meth:`ShardWriter.push_source` (source-ordered slabs from an iterator) and
:meth:`ShardWriter.push_store` (store-ordered blocks: the pyramid level above).

Chunks equal to the fill value everywhere are left out of the shard (as zarr-python does with
``write_empty_chunks=False``): readers return the fill value for them.

Verification (``verify``) proves that the files decode to the source voxels in two steps, each a
fraction of the cost of decoding the shards again from disk: every encoded chunk is decoded on
its encoder thread right away, while the source chunk is still in that thread's cache, and
compared with it voxel for voxel; then every shard file is read back after writing, its index
checked (CRC32C) and every chunk's bytes in the file compared with the frame that decoded
correctly. What readers decode from the file is therefore exactly the source.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import google_crc32c
import numpy as np
from numcodecs import Blosc

from verse_etl.errors import VerseEtlError
from verse_etl.geometry.store_frame import StoreFrame

ABSENT = 2**64 - 1
"""Index entry (offset and nbytes) of a chunk that is not stored in its shard."""

# Chunk rows (one chunk deep along the last axis) staged at once per array: one filling while
# the previous one is encoded. More would only hold more memory: the decoder is the bottleneck.
STAGED_ROWS = 2


class StoreMismatchError(VerseEtlError):
    """A chunk or shard file of the store does not hold the voxels that were written."""


@dataclass(frozen=True)
class ChunkCodec:
    """The Blosc settings of every chunk of an array (the ``blosc`` codec of its metadata)."""

    cname: str
    clevel: int
    shuffle: str  # "shuffle", "bitshuffle" or "noshuffle", as in the Zarr v3 blosc codec
    blocksize: int
    typesize: int

    def numcodecs(self) -> Blosc:
        """The numcodecs Blosc object that encodes and decodes these chunks."""
        return Blosc(
            cname=self.cname,
            clevel=self.clevel,
            shuffle={"shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}.get(
                self.shuffle, Blosc.NOSHUFFLE
            ),
            blocksize=self.blocksize,
            typesize=self.typesize,
        )


def shard_key(index: tuple[int, int, int]) -> str:
    """Relative path of a shard file (default chunk key encoding, ``/`` separator).

    Examples
    --------
    >>> shard_key((0, 1, 2))
    'c/0/1/2'
    """
    return "c/" + "/".join(str(i) for i in index)


def encode_index(entries: np.ndarray) -> bytes:
    """Bytes of a shard index: ``entries`` (uint64, ``(*chunks_per_shard, 2)``) then its CRC32C."""
    raw = np.ascontiguousarray(entries, dtype="<u8").tobytes()
    return raw + google_crc32c.value(raw).to_bytes(4, "little")


def decode_index(
    data: bytes | memoryview, chunks_per_shard: tuple[int, ...], path: Path
) -> np.ndarray:
    """Parse the index at the end of a shard file's bytes, checking its CRC32C.

    Raises
    ------
    StoreMismatchError
        If the file is too short or the checksum of the index does not match.
    """
    n = int(np.prod(chunks_per_shard)) * 16
    if len(data) < n + 4:
        raise StoreMismatchError(f"{path}: shard of {len(data)} bytes cannot hold its index")
    # Copies (the index is a few KiB): the caller may close the mapped file the bytes come from.
    raw = bytes(data[len(data) - n - 4 : len(data) - 4])
    crc = int.from_bytes(bytes(data[len(data) - 4 :]), "little")
    if google_crc32c.value(raw) != crc:
        raise StoreMismatchError(f"{path}: shard index checksum does not match")
    return np.frombuffer(raw, dtype="<u8").reshape((*chunks_per_shard, 2))


# -- layout: pure index arithmetic --------------------------------------------------------------


def grid(shape: tuple[int, ...], block: tuple[int, ...]) -> tuple[int, ...]:
    """Blocks (chunks or shards) along each axis of an array, the last one possibly partial.

    Examples
    --------
    >>> grid((100, 64, 30), (64, 64, 16))
    (2, 1, 2)
    """
    return tuple(-(-n // b) for n, b in zip(shape, block, strict=True))


def stream_rows(length: int, depth: int, reverse: bool) -> list[tuple[int, int, int]]:
    """Chunk rows ``(row, lo, hi)`` along the stream axis, in the order a stream fills them.

    Row ``r`` holds store indices ``[r * depth, min((r + 1) * depth, length))``. A reversed
    stream (source slices running toward decreasing store index) fills the last, partial row
    first.

    Examples
    --------
    >>> stream_rows(10, 4, False)
    [(0, 0, 4), (1, 4, 8), (2, 8, 10)]
    >>> stream_rows(10, 4, True)
    [(2, 8, 10), (1, 4, 8), (0, 0, 4)]
    """
    rows = [(r, r * depth, min((r + 1) * depth, length)) for r in range(-(-length // depth))]
    return rows[::-1] if reverse else rows


def shard_slab_rows(n_rows: int, rows_per_shard: int, slab: int) -> int:
    """Chunk rows in slab ``slab`` of shards along the stream axis (the last may be partial).

    Examples
    --------
    >>> [shard_slab_rows(5, 2, s) for s in range(3)]
    [2, 2, 1]
    """
    return min(rows_per_shard, n_rows - slab * rows_per_shard)


def chunk_slices(
    index: tuple[int, ...], chunks: tuple[int, ...], shape: tuple[int, ...]
) -> tuple[slice, ...]:
    """Where chunk ``index`` lies in an array of ``shape`` (edge chunks clipped to it).

    Examples
    --------
    >>> chunk_slices((1, 0, 2), (4, 4, 4), (6, 4, 9))
    (slice(4, 6, None), slice(0, 4, None), slice(8, 9, None))
    """
    return tuple(
        slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, chunks, shape, strict=True)
    )


def shard_members(
    shard: tuple[int, int, int], per_shard: tuple[int, int, int], n_chunks: tuple[int, int, int]
) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    """``(local, global)`` index of every chunk of shard ``shard`` that lies in the array.

    Examples
    --------
    >>> shard_members((1, 0, 0), (2, 1, 1), (3, 1, 1))
    [((0, 0, 0), (2, 0, 0))]
    """
    out = []
    for a in range(per_shard[0]):
        for b in range(per_shard[1]):
            for c in range(per_shard[2]):
                g = (
                    shard[0] * per_shard[0] + a,
                    shard[1] * per_shard[1] + b,
                    shard[2] * per_shard[2] + c,
                )
                if all(x < n for x, n in zip(g, n_chunks, strict=True)):
                    out.append(((a, b, c), g))
    return out


def encoded_order(frame: StoreFrame) -> tuple[int, int, int]:
    """The ``transpose`` codec order that encodes a chunk in the source's memory order.

    The codec encodes ``chunk.transpose(order)`` in C order, so its last axis is the fastest:
    the store axis of source axis 0 (NIfTI and DICOM slabs are Fortran-ordered).

    Examples
    --------
    >>> encoded_order(StoreFrame.identity((4, 4, 4)))
    (2, 1, 0)
    >>> encoded_order(StoreFrame((1, 2, 0), (False, False, True), (4, 4, 4)))
    (0, 2, 1)
    """
    return (frame.axes[2], frame.axes[1], frame.axes[0])


class SlabReader(Protocol):
    """A source that decodes its next slices into an array it is given (zero copy)."""

    dtype: np.dtype

    def read_into(self, out: np.ndarray) -> None:
        """Fill ``out`` (Fortran-ordered ``(n0, n1, k)``) with the next ``k`` slices."""


class Digest(Protocol):
    """A hashlib-style digest (e.g. ``xxhash.xxh3_128()``) fed with the voxels in stream order."""

    def update(self, data: Any, /) -> None: ...

    def hexdigest(self) -> str: ...


@dataclass(frozen=True)
class ArrayLayout:
    """One sharded array as :class:`ShardWriter` writes it (its ``zarr.json`` is written apart).

    ``shape``, ``chunks`` and ``shards`` are in store axis order; ``frame`` says how the source's
    axes (the memory order of what feeds the writer) become the store's.
    """

    directory: Path  # holds the array's zarr.json; shard files go below c/
    shape: tuple[int, int, int]
    dtype: np.dtype
    chunks: tuple[int, int, int]
    shards: tuple[int, int, int]
    codec: ChunkCodec
    frame: StoreFrame
    fill_value: int = 0

    @property
    def per_shard(self) -> tuple[int, int, int]:
        """Chunks per shard along each axis."""
        return tuple(s // c for s, c in zip(self.shards, self.chunks, strict=True))  # type: ignore[return-value]  # three axes: tuple() is typed variable-length


@dataclass(frozen=True)
class Workers:
    """``pool`` encodes chunks (Blosc releases the GIL); ``serial`` (one thread) does the
    in-order work: digest, ``on_row``, the pyramid, shard files."""

    pool: Executor
    serial: Executor


@dataclass(frozen=True)
class Hooks:
    """What sees the voxels of level 0 as they stream (all optional).

    ``digest`` is fed each staged row in source memory order, in stream order: the digest of the
    source's voxel block. ``on_row(k0, row)`` sees each row (source order, source slice ``k0``
    first) in stream order on ``serial``, read-only. ``on_chunk(voxels)`` sees the voxels of
    every chunk once (flat, edge chunks without padding) on the encoder thread that gathered
    them: concurrent and in no order, so it must be thread-safe and order-independent.
    """

    digest: Digest | None = None
    on_row: Callable[[int, np.ndarray], None] | None = None
    on_chunk: Callable[[np.ndarray], None] | None = None


@dataclass
class _Row:
    """A chunk row being staged: its buffer (source memory order) and how much is filled."""

    index: int
    lo: int  # store indices [lo, hi) along the stream axis
    hi: int
    buffer: np.ndarray
    filled: int = 0
    futures: list[Future] = field(default_factory=list)


class ShardWriter:
    """Stream one array, chunk row by chunk row along the store's stream axis, into shard files.

    The producer fills a staging row (one chunk deep along the stream axis, in the source's
    memory order) and hands it on; it does nothing else with the voxels, so that it is never
    slower than the decoder. A full row is split into chunk-encoding tasks on ``workers.pool``;
    on ``workers.serial``, in stream order, the row is hashed, shown to ``hooks.on_row`` and
    its every second voxel (in store order) pushed to the next pyramid level ``child``. When
    every row of a slab of shards is encoded, ``serial`` writes those shard files (and reads
    them back with ``verify``). Memory is bounded whatever the volume size: ``STAGED_ROWS``
    rows per level (the producer waits for the oldest row's tasks before reusing its buffer)
    plus the encoded chunks of the shards being assembled.
    """

    def __init__(
        self,
        layout: ArrayLayout,
        workers: Workers,
        *,
        hooks: Hooks | None = None,
        verify: bool = True,
        child: ShardWriter | None = None,
    ) -> None:
        self.layout = layout
        self.workers = workers
        self.hooks = hooks or Hooks()
        self.verify = verify
        self.child = child
        self.dtype = np.dtype(layout.dtype)
        frame = layout.frame
        if frame.store_shape != layout.shape:
            raise ValueError(f"frame of {frame.store_shape} for an array of {layout.shape}")
        self.axis = frame.stream_axis
        depth = layout.chunks[self.axis]
        self._plan = stream_rows(layout.shape[self.axis], depth, frame.stream_reversed)
        if child is not None and len(self._plan) > 1 and depth % 2:
            raise ValueError(f"pyramid needs an even chunk depth along the stream, got {depth}")
        self._next_row = 0  # position in _plan of the row being staged
        self._row: _Row | None = None
        self._busy: deque[_Row] = deque()
        self._spare: list[np.ndarray] = []
        self._allocated = 0
        self._n_chunks: tuple[int, int, int] = grid(layout.shape, layout.chunks)  # type: ignore[assignment]  # three axes: tuple() is typed variable-length
        self._rows_done: dict[int, int] = {}  # shard slab -> rows encoded
        # Chunk -> (task encoding its strip of chunks, its place in the strip).
        self._shard_chunks: dict[tuple[int, int, int], tuple[Future[list[bytes | None]], int]] = {}
        self._shard_writes: list[Future] = []
        self._local = threading.local()
        self._blosc = layout.codec.numcodecs()
        self._order = encoded_order(frame)
        self._unorder = tuple(int(a) for a in np.argsort(self._order))
        # Blosc is deterministic: a chunk is all fill exactly when its frame is this one, so
        # only chunks with this frame are scanned for it (and only to verify).
        self._fill_frame = self._blosc.encode(
            np.full(int(np.prod(layout.chunks)), layout.fill_value, self.dtype)
        )
        # The pyramid levels below this one are fed from its in-order task, on ``serial``
        # already: they run their own in-order work inline (a task queued behind the running
        # one could not be waited for).
        self._inline = False
        if child is not None:
            child._inline = True

    # -- entry points -------------------------------------------------------------------------

    def pull(self, reader: SlabReader) -> None:
        """Fill the whole array from ``reader``, decoding straight into the staging rows (in
        source order: each row is the next run of source slices)."""
        if np.dtype(reader.dtype) != self.dtype:
            raise ValueError(f"reader of {reader.dtype} for an array of {self.dtype}")
        while self._next_row < len(self._plan):
            row = self._start_row()
            reader.read_into(row.buffer[:, :, : row.hi - row.lo])
            row.filled = row.hi - row.lo
            self._flush_row()

    def push_source(self, k0: int, slab: np.ndarray) -> None:
        """Append source slices ``k0 .. k0 + d - 1`` (``slab``: ``(n0, n1, d)`` in source axis
        order, any memory order) to the stream; copied before this returns."""
        frame = self.layout.frame
        if slab.ndim != 3 or slab.shape[:2] != frame.shape[:2]:
            raise ValueError(f"slab of shape {slab.shape} does not fit source {frame.shape}")
        lo, _ = frame.store_range(k0, slab.shape[2])
        self.push_store(lo, frame.to_store(slab))

    def push_store(self, lo: int, block: np.ndarray) -> None:
        """Append ``block`` (store axis order) covering store indices ``lo .. lo + d - 1``
        along the stream axis; copied before this returns. Blocks must continue the stream."""
        a, n = self.axis, block.shape[self.axis]
        others = [i for i in range(3) if i != a]
        if any(block.shape[i] != self.layout.shape[i] for i in others):
            raise ValueError(f"block of shape {block.shape} does not fit array {self.layout.shape}")
        done = 0
        while done < n:
            row = self._row or self._start_row()
            reverse = self.layout.frame.stream_reversed
            # The part of the block that goes into this row, next in stream order.
            if reverse:
                hi = row.hi - row.filled
                take = min(hi - row.lo, n - done)
                piece_lo = hi - take
            else:
                piece_lo = row.lo + row.filled
                take = min(row.hi - piece_lo, n - done)
            expected = lo + n - done if reverse else lo + done
            if (piece_lo + take if reverse else piece_lo) != expected:
                raise ValueError(
                    f"{self.layout.directory}: block at {lo}..{lo + n} does not continue the "
                    f"stream (its rows are filled up to {piece_lo + take if reverse else piece_lo})"
                )
            target = [slice(None)] * 3
            target[a] = slice(piece_lo - row.lo, piece_lo - row.lo + take)
            source = [slice(None)] * 3
            source[a] = slice(piece_lo - lo, piece_lo - lo + take)
            self._store_view(row)[tuple(target)] = block[tuple(source)]
            row.filled += take
            done += take
            if row.filled == row.hi - row.lo:
                self._flush_row()

    def finish(self) -> None:
        """Wait until every shard of this array and of its pyramid levels is written (and read
        back), re-raising the first error of any worker."""
        if self._next_row < len(self._plan) or self._row is not None:
            raise ValueError(f"{self.layout.directory}: stream stopped before the array was full")
        while self._busy:
            _wait_all(self._busy.popleft().futures)
        _wait_all(self._shard_writes)
        if self.child is not None:
            self.child.finish()

    def abort(self) -> None:
        """Cancel what has not started and wait for what has, ignoring errors (before cleanup)."""
        futures = [f for row in self._busy for f in row.futures] + self._shard_writes
        futures += [f for f, _ in self._shard_chunks.values()]
        for f in futures:
            f.cancel()
        wait(futures)
        if self.child is not None:
            self.child.abort()

    # -- staging ------------------------------------------------------------------------------

    def _start_row(self) -> _Row:
        if self._next_row >= len(self._plan):
            raise ValueError(f"{self.layout.directory}: more voxels than the array holds")
        index, lo, hi = self._plan[self._next_row]
        self._next_row += 1
        self._row = _Row(index, lo, hi, self._acquire())
        return self._row

    def _acquire(self) -> np.ndarray:
        if self._allocated < STAGED_ROWS:
            self._allocated += 1
            shape = self.layout.frame.shape
            depth = self.layout.chunks[self.axis]
            return staging_array((shape[0], shape[1], depth), self.dtype)
        row = self._busy.popleft()
        _wait_all(row.futures)
        return row.buffer

    def _source_view(self, row: _Row) -> np.ndarray:
        """The row's voxels in source axis order (Fortran-contiguous)."""
        return row.buffer[:, :, : row.hi - row.lo]

    def _store_view(self, row: _Row) -> np.ndarray:
        """The row's voxels in store axis order (a view of the same memory)."""
        return self.layout.frame.to_store(self._source_view(row))

    def _flush_row(self) -> None:
        row = self._row
        assert row is not None
        self._row = None
        view = self._store_view(row)
        a = self.axis
        b, c = (i for i in range(3) if i != a)
        # One task per strip of chunks along axis c: a tenth of the task overhead of one per
        # chunk, on the decoding thread too, with enough tasks per row to keep every encoder busy.
        for ib in range(self._n_chunks[b]):
            future = self.workers.pool.submit(self._encode_strip, view, row.index, ib)
            row.futures.append(future)
            for ic in range(self._n_chunks[c]):
                where = [0, 0, 0]
                where[a], where[b], where[c] = row.index, ib, ic
                self._shard_chunks[tuple(where)] = (future, ic)  # type: ignore[index]  # three axes: tuple() is typed variable-length
        hooks = self.hooks
        k0 = self.layout.frame.shape[2] - row.hi if self.layout.frame.stream_reversed else row.lo
        if self._inline:
            self._in_order(k0, row)
        elif hooks.digest is not None or hooks.on_row is not None or self.child is not None:
            row.futures.append(self.workers.serial.submit(self._in_order, k0, row))
        self._busy.append(row)
        per = self.layout.per_shard[a]
        slab = row.index // per
        self._rows_done[slab] = self._rows_done.get(slab, 0) + 1
        if self._rows_done[slab] == shard_slab_rows(len(self._plan), per, slab):
            self._write_shard_slab(slab)
        # Keep the list of pending writes short: drop the ones already done (raising errors).
        self._shard_writes = [f for f in self._shard_writes if not _done_ok(f)]

    def _write_shard_slab(self, slab: int) -> None:
        """Queue the shard files of slab ``slab`` along the stream axis (all its rows queued)."""
        a = self.axis
        b, c = (i for i in range(3) if i != a)
        n_shards = grid(self.layout.shape, self.layout.shards)
        for sb in range(n_shards[b]):
            for sc in range(n_shards[c]):
                where = [0, 0, 0]
                where[a], where[b], where[c] = slab, sb, sc
                shard: tuple[int, int, int] = tuple(where)  # type: ignore[assignment]  # three axes: tuple() is typed variable-length
                members = {
                    local: self._shard_chunks.pop(g)
                    for local, g in shard_members(shard, self.layout.per_shard, self._n_chunks)
                }
                self._shard_writes.append(
                    self.workers.serial.submit(self._write_shard, shard, members)
                )

    def _in_order(self, k0: int, row: _Row) -> None:
        """The work on a row that needs the rows in stream order (on ``serial``)."""
        hooks = self.hooks
        source = self._source_view(row)
        if hooks.digest is not None:
            # Fortran-ordered and contiguous: the bytes are the source's voxel block as stored.
            hooks.digest.update(source.reshape(-1, order="F"))
        if hooks.on_row is not None:
            hooks.on_row(k0, source)
        if self.child is not None:
            # Nearest-neighbour pyramid in store order: rows start at multiples of the (even)
            # chunk depth, so every second voxel of the row is every second voxel of the array.
            self.child.push_store(row.lo // 2, self._store_view(row)[::2, ::2, ::2])

    # -- encoding -----------------------------------------------------------------------------

    def _encode_strip(self, view: np.ndarray, row: int, ib: int) -> list[bytes | None]:
        """The frames of the chunks of a staged row with index ``ib`` along the first other axis."""
        a = self.axis
        b, c = (i for i in range(3) if i != a)
        frames = []
        for ic in range(self._n_chunks[c]):
            where = [0, 0, 0]
            where[a], where[b], where[c] = row, ib, ic
            frames.append(self._encode(view, tuple(where)))  # type: ignore[arg-type]  # three axes: tuple() is typed variable-length
        return frames

    def _gather_buffer(self) -> tuple[np.ndarray, np.ndarray]:
        """This thread's chunk buffer: the encoded layout (C-contiguous) and its store-order view.

        One per encoder thread: no 512 KiB allocation per chunk, which would fragment the
        allocator's arenas and let the peak RSS creep up with the volume size.
        """
        buffers = getattr(self._local, "chunk", None)
        if buffers is None:
            chunks = self.layout.chunks
            encoded = np.empty(tuple(chunks[o] for o in self._order), self.dtype)
            buffers = self._local.chunk = (encoded, encoded.transpose(self._unorder))
        return buffers

    def _encode(self, view: np.ndarray, where: tuple[int, int, int]) -> bytes | None:
        """The Blosc frame of chunk ``where`` of a staged row (None if it is all fill), verified."""
        chunks = self.layout.chunks
        local = list(where)
        local[self.axis] = 0  # the row holds one chunk along the stream axis
        block = view[chunk_slices(tuple(local), chunks, view.shape)]
        encoded, chunk = self._gather_buffer()
        whole = block.shape == chunks
        if not whole:  # edge chunks are stored whole, padded with the fill
            encoded.fill(self.layout.fill_value)
        b0, b1, b2 = block.shape
        chunk[:b0, :b1, :b2] = block
        flat = encoded.reshape(-1)
        if self.hooks.on_chunk is not None:
            self.hooks.on_chunk(flat if whole else chunk[:b0, :b1, :b2].ravel("K"))
        frame = self._blosc.encode(flat)
        if frame == self._fill_frame:
            # Left out: readers give the fill value. Verified on the voxels, not the codec.
            if self.verify and np.any(flat != self.layout.fill_value):
                raise StoreMismatchError(
                    f"{self.layout.directory}: chunk {where} encodes like an all-fill chunk but is not"
                )
            return None
        if self.verify:
            self._check_frame(frame, flat, where)
        return frame

    def _check_frame(self, frame: bytes, flat: np.ndarray, where: tuple[int, int, int]) -> None:
        """Decode ``frame`` as a reader would and compare it with the chunk's voxels."""
        decoded = getattr(self._local, "decoded", None)
        if decoded is None:
            decoded = self._local.decoded = np.empty(flat.size, self.dtype)
        try:
            self._blosc.decode(frame, out=decoded)
        except Exception as e:  # Blosc raises RuntimeError or ValueError
            raise StoreMismatchError(
                f"{self.layout.directory}: chunk {where} does not decode ({e})"
            ) from e
        if not _same_bytes(decoded, flat):
            raise StoreMismatchError(
                f"{self.layout.directory}: chunk {where} decodes to other voxels than were encoded"
            )

    def _write_shard(
        self,
        index: tuple[int, int, int],
        members: dict[tuple[int, int, int], tuple[Future[list[bytes | None]], int]],
    ) -> None:
        per_shard = self.layout.per_shard
        entries = np.full((*per_shard, 2), ABSENT, dtype="<u8")
        path = self.layout.directory / shard_key(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        frames: dict[tuple[int, int, int], bytes | None] = {}
        offset = 0
        with open(path, "wb") as f:
            for local in sorted(members):
                future, place = members[local]
                frame = frames[local] = future.result()[place]
                if frame is None:
                    continue
                f.write(frame)
                entries[local] = (offset, len(frame))
                offset += len(frame)
            if offset:
                f.write(encode_index(entries))
        if offset == 0:  # every chunk is fill: no file at all, as zarr-python does
            path.unlink()
        elif self.verify:
            verify_shard_file(path, per_shard, frames)


def verify_shard_file(
    path: Path,
    per_shard: tuple[int, ...],
    frames: Mapping[tuple[int, int, int], bytes | None],
) -> None:
    """Check that a shard file holds exactly ``frames`` (None: chunk absent), via its index.

    Parameters
    ----------
    path
        The shard file.
    per_shard
        Chunks per shard along each axis.
    frames
        The Blosc frame of each chunk, verified to decode to the source voxels, keyed by the
        chunk's position in the shard.

    Raises
    ------
    StoreMismatchError
        If the index is unreadable or a chunk's entry or bytes differ from its frame.
    """
    n = int(np.prod(per_shard)) * 16 + 4
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        fd = f.fileno()
        entries = decode_index(os.pread(fd, min(n, size), max(0, size - n)), per_shard, path)
        for local, frame in frames.items():
            offset, nbytes = (int(v) for v in entries[local])
            if frame is None:
                if offset != ABSENT:
                    raise StoreMismatchError(f"{path}: chunk {local} should be absent")
                continue
            if offset == ABSENT or nbytes != len(frame) or offset + nbytes > size - n:
                raise StoreMismatchError(
                    f"{path}: index entry of chunk {local} is ({offset}, {nbytes}), expected "
                    f"{len(frame)} bytes within the first {size - n}"
                )
            if os.pread(fd, nbytes, offset) != frame:
                raise StoreMismatchError(
                    f"{path}: chunk {local} reads back different bytes than were written"
                )


def _same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    """True if two contiguous arrays hold the same bytes (compared 8 at a time where possible)."""
    a, b = a.reshape(-1, order="A").view(np.uint8), b.reshape(-1, order="A").view(np.uint8)
    if a.size != b.size:
        return False
    wide = a.size - a.size % 8
    return bool(
        np.array_equal(a[:wide].view(np.uint64), b[:wide].view(np.uint64))
        and np.array_equal(a[wide:], b[wide:])
    )


def staging_array(shape: tuple[int, int, int], dtype: np.dtype) -> np.ndarray:
    """An uninitialised Fortran-ordered array in its own anonymous memory map (regular pages).

    Not ``np.empty``: numpy asks for transparent huge pages on allocations of 4 MiB and more,
    and where the kernel compacts memory to find them on the first write (``defrag`` set to
    ``madvise``, the default) that first write of a staging row measured up to 2 ms per MiB on a
    busy machine, several times what the regular pages cost (about 0.4 ms per MiB). Private,
    not ``mmap``'s default shared mapping, whose pages are shared memory (shmem) and cost more
    to fault in: 12.4 against 17.1 ms of CPU for the first write of a 32 MiB row (median of 7
    interleaved rounds, load 2).

    Examples
    --------
    >>> a = staging_array((4, 3, 2), np.dtype(np.int16))
    >>> a.shape, a.dtype, a.flags.f_contiguous
    ((4, 3, 2), dtype('int16'), True)
    """
    count = int(np.prod(shape))
    nbytes = max(count * np.dtype(dtype).itemsize, 1)
    private = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
    memory = mmap.mmap(-1, nbytes, flags=private) if private else mmap.mmap(-1, nbytes)
    return np.frombuffer(memory, dtype, count).reshape(shape, order="F")


def _done_ok(future: Future) -> bool:
    if not future.done():
        return False
    future.result()  # re-raise a worker's error in the producer
    return True


def _wait_all(futures: list[Future]) -> None:
    wait(futures)
    for f in futures:
        f.result()
