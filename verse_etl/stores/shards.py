"""Zarr v3 ``sharding_indexed`` arrays written directly: chunks encoded on threads, shards assembled.

Spec: Zarr v3 core (https://zarr-specs.readthedocs.io/en/latest/v3/core/index.html) and the
sharding codec (.../v3/codecs/sharding-indexed/index.html). zarr-python writes this format at a
fraction of the speed of the codec itself (``benchmarks/convert.py`` measures it), so the chunks
are encoded here with the same numcodecs Blosc that zarr-python uses and each shard file is laid
out as the spec says: the encoded chunks back to back, then the index (``offset, nbytes`` as
little-endian uint64 per chunk of the shard, C order, ``2**64 - 1`` for an absent chunk)
followed by its CRC32C. zarr-python writes the ``zarr.json`` metadata and reads the arrays back
bit for bit (tests/unit/test_volumes.py).

Inner codecs of every chunk are ``transpose(order=[2, 1, 0])``, ``bytes(little)``, ``blosc``:
the transpose makes the encoded bytes of a chunk its voxels in Fortran order, which is how the
NIfTI and DICOM slabs arrive. Gathering a chunk is then a copy of contiguous runs (several GB/s)
instead of a 3-D transposition (about 0.3 GB/s, slower than the decoder it would follow).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import google_crc32c
import numpy as np
from numcodecs import Blosc

from verse_etl.errors import VerseEtlError

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


class SlabReader(Protocol):
    """A source that decodes its next slices into an array it is given (zero copy)."""

    dtype: np.dtype

    def read_into(self, out: np.ndarray) -> None:
        """Fill ``out`` (Fortran-ordered ``(n0, n1, k)``) with the next ``k`` slices."""


class Digest(Protocol):
    """A hashlib-style digest (e.g. ``xxhash.xxh3_128()``) fed with the voxels in stream order."""

    def update(self, data: Any, /) -> None: ...

    def hexdigest(self) -> str: ...


class ArrayStream:
    """Stream slabs along the last axis into one sharded Zarr v3 array (metadata written apart).

    The producer (the decoding thread) fills a staging row one chunk deep and hands it on; it does
    nothing else with the voxels, so that it is never slower than the decoder. A full row is
    split into chunk-encoding tasks on ``pool``; on ``serial``, in stream order, the row is
    hashed, shown to ``on_row`` and its every second voxel pushed to the next pyramid level;
    each encoding task shows its chunks to ``on_chunk`` (statistics) as it gathers them.
    When the rows of a shard are encoded, ``serial`` writes the shard file (and reads it back).
    Memory is bounded whatever the volume size: ``STAGED_ROWS`` rows per level (the producer
    waits for the oldest row's tasks before reusing it) plus the encoded chunks of the shards
    being assembled.

    Parameters
    ----------
    directory
        Folder of the array (holds its ``zarr.json``); shard files go below ``c/``.
    shape, dtype, chunks, shards
        Geometry of the array; ``shards`` are whole multiples of ``chunks``.
    codec
        Blosc settings of the chunks.
    pool
        Threads that encode chunks (Blosc releases the GIL).
    serial
        One thread for the in-order work: digest, ``on_row``, pyramid, shard files.
    digest
        A hashlib-style object fed with the voxels in Fortran order, or None.
    verify
        Decode every chunk after encoding and compare it with the source voxels; read every
        shard file back and compare its chunks with the verified frames.
    child
        The next pyramid level, fed with every second voxel of each staged row.
    fill_value
        The array's fill value: chunks holding nothing else are not stored.
    on_row
        ``on_row(k0, row)`` sees every staged row once, in order, read-only, on ``serial``.
    on_chunk
        ``on_chunk(voxels)`` sees the voxels of every chunk once (flat, Fortran order, edge
        chunks without their padding), read-only, on the encoder thread that has just gathered
        them, while they are in its cache: statistics cost no second read of the volume. Calls
        are concurrent and in no order: it must be thread-safe and order-independent.
    """

    def __init__(
        self,
        directory: Path,
        shape: tuple[int, int, int],
        dtype: np.dtype,
        chunks: tuple[int, int, int],
        shards: tuple[int, int, int],
        codec: ChunkCodec,
        pool: Executor,
        serial: Executor,
        *,
        digest: Digest | None = None,
        verify: bool = True,
        child: ArrayStream | None = None,
        fill_value: int = 0,
        on_row: Callable[[int, np.ndarray], None] | None = None,
        on_chunk: Callable[[np.ndarray], None] | None = None,
    ) -> None:
        self.directory = directory
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.chunks = chunks
        self.shards = shards
        self.per_shard = tuple(s // c for s, c in zip(shards, chunks, strict=True))
        self.codec = codec
        self._blosc = codec.numcodecs()
        self.pool = pool
        self.serial = serial
        self.digest = digest
        self.verify = verify
        self.child = child
        self.fill_value = fill_value
        self.on_row = on_row
        self.on_chunk = on_chunk
        self.written = 0  # slices received
        self._row = 0  # index of the chunk row being staged
        self._filled = 0  # slices of the current row staged so far
        self._buffer: np.ndarray | None = None
        self._allocated = 0
        self._busy: deque[tuple[np.ndarray, list[Future]]] = deque()
        # Chunk -> (task encoding its strip of chunks along axis 1, its place in the strip).
        self._shard_chunks: dict[tuple[int, int, int], tuple[Future[list[bytes | None]], int]] = {}
        self._shard_writes: list[Future] = []
        self._local = threading.local()
        # Blosc is deterministic: a chunk is all fill exactly when its frame is this one, so
        # only chunks with this frame are scanned for it (and only to verify).
        self._fill_frame = self._blosc.encode(np.full(int(np.prod(chunks)), fill_value, self.dtype))
        # The pyramid levels below this one are fed from its in-order task, on ``serial``
        # already: they run their own in-order work inline (a task queued behind the running
        # one could not be waited for).
        self._inline = False
        if child is not None:
            child._inline = True

    # -- producer side ------------------------------------------------------------------------

    def push(self, slab: np.ndarray) -> None:
        """Append ``slab`` (shape ``(n0, n1, d)``, any memory order) along the last axis.

        The slab is copied into a staging row before this returns, so the caller may reuse it.
        """
        n0, n1, n2 = self.shape
        if slab.shape[:2] != (n0, n1) or self.written + slab.shape[2] > n2:
            raise ValueError(
                f"slab of shape {slab.shape} at slice {self.written} does not fit array {self.shape}"
            )
        depth = self.chunks[2]
        pos = 0
        while pos < slab.shape[2]:
            if self._buffer is None:
                self._buffer = self._acquire()
            take = min(depth - self._filled, slab.shape[2] - pos)
            self._buffer[:, :, self._filled : self._filled + take] = slab[:, :, pos : pos + take]
            self._filled += take
            pos += take
            self.written += take
            if self._filled == depth or self.written == n2:
                self._flush_row()

    def pull(self, reader: SlabReader) -> None:
        """Fill the whole array from ``reader``, decoding straight into the staging rows."""
        depth = self.chunks[2]
        while self.written < self.shape[2]:
            buffer = self._acquire()
            view = buffer[:, :, : min(depth, self.shape[2] - self.written)]
            reader.read_into(view)
            self._buffer, self._filled = buffer, view.shape[2]
            self.written += view.shape[2]
            self._flush_row()

    def finish(self) -> None:
        """Wait until every shard of this array and of its pyramid levels is written (and read
        back), re-raising the first error of any worker."""
        if self.written != self.shape[2]:
            raise ValueError(f"stream stopped at slice {self.written} of {self.shape[2]}")
        while self._busy:
            _wait_all(self._busy.popleft()[1])
        _wait_all(self._shard_writes)
        if self.child is not None:
            self.child.finish()

    def abort(self) -> None:
        """Cancel what has not started and wait for what has, ignoring errors (before cleanup)."""
        futures = [f for _, fs in self._busy for f in fs] + self._shard_writes
        futures += [f for f, _ in self._shard_chunks.values()]
        for f in futures:
            f.cancel()
        wait(futures)
        if self.child is not None:
            self.child.abort()

    # -- internals ----------------------------------------------------------------------------

    def _acquire(self) -> np.ndarray:
        if self._allocated < STAGED_ROWS:
            self._allocated += 1
            return staging_array((self.shape[0], self.shape[1], self.chunks[2]), self.dtype)
        buffer, futures = self._busy.popleft()
        _wait_all(futures)
        return buffer

    def _flush_row(self) -> None:
        assert self._buffer is not None
        buffer, depth, row = self._buffer, self._filled, self._row
        k0 = self.written - depth
        view = buffer[:, :, :depth]
        futures: list[Future] = []
        c0, c1, _ = self.chunks
        p0, p1, p2 = self.per_shard
        # One task per strip of chunks along axis 1: a tenth of the task overhead of one per
        # chunk, on the decoding thread too, with enough tasks per row to keep every encoder busy.
        n_cj = -(-self.shape[1] // c1)
        for ci in range(-(-self.shape[0] // c0)):
            future = self.pool.submit(self._encode_strip, view, ci, n_cj, row)
            futures.append(future)
            for cj in range(n_cj):
                self._shard_chunks[(ci, cj, row)] = (future, cj)
        if self._inline:
            self._in_order(k0, view)
        elif self.digest is not None or self.on_row is not None or self.child is not None:
            futures.append(self.serial.submit(self._in_order, k0, view))
        self._busy.append((buffer, futures))
        self._buffer = None
        self._filled = 0
        self._row += 1
        last = self.written == self.shape[2]
        if self._row % p2 == 0 or last:
            sk = row // p2
            n_si, n_sj = -(-self.shape[0] // self.shards[0]), -(-self.shape[1] // self.shards[1])
            for si in range(n_si):
                for sj in range(n_sj):
                    members = {
                        (a, b, c): self._shard_chunks.pop((si * p0 + a, sj * p1 + b, sk * p2 + c))
                        for a in range(p0)
                        for b in range(p1)
                        for c in range(p2)
                        if (si * p0 + a, sj * p1 + b, sk * p2 + c) in self._shard_chunks
                    }
                    self._shard_writes.append(
                        self.serial.submit(self._write_shard, (si, sj, sk), members)
                    )
        # Keep the list of pending writes short: drop the ones already done (raising errors).
        self._shard_writes = [f for f in self._shard_writes if not _done_ok(f)]

    def _in_order(self, k0: int, view: np.ndarray) -> None:
        """The work on a row that needs the rows in stream order (on ``serial``)."""
        if self.digest is not None:
            # Fortran-ordered and contiguous: the bytes are the source's voxel block as stored.
            self.digest.update(view.reshape(-1, order="F"))
        if self.on_row is not None:
            self.on_row(k0, view)
        if self.child is not None:
            # Nearest-neighbour pyramid: rows start at multiples of the (even) chunk depth, so
            # every second voxel of the row is every second voxel of the array.
            self.child.push(view[::2, ::2, ::2])

    def _encode_strip(self, view: np.ndarray, ci: int, n_cj: int, row: int) -> list[bytes | None]:
        """The frames of chunks ``(ci, 0..n_cj-1, row)`` of a staged row."""
        return [self._encode(view, (ci, cj, row)) for cj in range(n_cj)]

    def _encode(self, view: np.ndarray, where: tuple[int, int, int]) -> bytes | None:
        """The Blosc frame of chunk ``where`` of a staged row (None if it is all fill), verified."""
        ci, cj, _ = where
        c0, c1, _ = self.chunks
        block = view[ci * c0 : (ci + 1) * c0, cj * c1 : (cj + 1) * c1, :]
        # One gather buffer per encoder thread: no 512 KiB allocation per chunk, which would
        # fragment the allocator's arenas and let the peak RSS creep up with the volume size.
        chunk = getattr(self._local, "chunk", None)
        if chunk is None:
            chunk = self._local.chunk = np.empty(self.chunks, self.dtype, order="F")
        if block.shape != self.chunks:  # edge chunks are stored whole, padded with the fill
            chunk.fill(self.fill_value)
        chunk[: block.shape[0], : block.shape[1], : block.shape[2]] = block
        flat = chunk.reshape(-1, order="F")
        if self.on_chunk is not None:
            b0, b1, b2 = block.shape
            self.on_chunk(flat if block.shape == self.chunks else chunk[:b0, :b1, :b2].ravel("F"))
        frame = self._blosc.encode(flat)
        if frame == self._fill_frame:
            # Left out: readers give the fill value. Verified on the voxels, not the codec.
            if self.verify and np.any(flat != self.fill_value):
                raise StoreMismatchError(
                    f"{self.directory}: chunk {where} encodes like an all-fill chunk but is not"
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
                f"{self.directory}: chunk {where} does not decode ({e})"
            ) from e
        if not _same_bytes(decoded, flat):
            raise StoreMismatchError(
                f"{self.directory}: chunk {where} decodes to other voxels than were encoded"
            )

    def _write_shard(
        self,
        index: tuple[int, int, int],
        members: dict[tuple[int, int, int], tuple[Future[list[bytes | None]], int]],
    ) -> None:
        entries = np.full((*self.per_shard, 2), ABSENT, dtype="<u8")
        path = self.directory / shard_key(index)
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
            verify_shard_file(path, self.per_shard, frames)


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
    busy machine, several times what the regular pages cost (about 0.4 ms per MiB).

    Examples
    --------
    >>> a = staging_array((4, 3, 2), np.dtype(np.int16))
    >>> a.shape, a.dtype, a.flags.f_contiguous
    ((4, 3, 2), dtype('int16'), True)
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    memory = mmap.mmap(-1, max(nbytes, 1))
    return np.frombuffer(memory, dtype, int(np.prod(shape))).reshape(shape, order="F")


def _done_ok(future: Future) -> bool:
    if not future.done():
        return False
    future.result()  # re-raise a worker's error in the producer
    return True


def _wait_all(futures: list[Future]) -> None:
    wait(futures)
    for f in futures:
        f.result()
