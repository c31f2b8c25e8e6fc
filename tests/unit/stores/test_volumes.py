"""Zarr stores: voxel-exact, sharded, published only when complete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xxhash
import zarr

from verse_etl.errors import InputError
from verse_etl.params import VolumeParams
from verse_etl.stores import shards
from verse_etl.stores.shards import ChunkCodec, StoreMismatchError, decode_index, verify_shard_file
from verse_etl.stores.volumes import IMAGE_PATH, LABELS_PATH, StoreWriter, as_labels, open_array

ROOT = Path(__file__).resolve().parents[3]

PARAMS = VolumeParams(chunks=(8, 8, 8), shard_chunks=(2, 2, 2))


def _slabs(volume: np.ndarray, depth: int):
    for k0 in range(0, volume.shape[2], depth):
        yield k0, volume[:, :, k0 : k0 + depth]


def test_store_round_trip_and_layout(tmp_path: Path) -> None:
    vol = np.random.default_rng(0).integers(-1024, 3000, (20, 17, 33)).astype(np.int16)
    final = tmp_path / "x.zarr"
    with StoreWriter(final, PARAMS, {"verse_etl": {"k": 1}}) as writer:
        info = writer.write_array(IMAGE_PATH, vol.shape, vol.dtype, _slabs(vol, 16))
    array = open_array(final)
    np.testing.assert_array_equal(array[...], vol)
    assert array.dtype == np.int16
    assert info.chunks == (8, 8, 8) and info.shards == (16, 16, 16)
    assert array.shards == (16, 16, 16)
    # Shards, not chunks, are files: 2 x 2 x 3 shard files for the image.
    assert (
        len([p for p in (final / IMAGE_PATH).rglob("*") if p.is_file() and p.name != "zarr.json"])
        == 12
    )
    assert not list(tmp_path.glob("*.tmp-*"))


def test_failed_write_leaves_no_store_and_keeps_old_one(tmp_path: Path) -> None:
    final = tmp_path / "x.zarr"
    old = np.ones((4, 4, 4), np.int16)
    with StoreWriter(final, PARAMS, {}) as writer:
        writer.write_array(IMAGE_PATH, old.shape, old.dtype, _slabs(old, 4))

    def broken():
        yield 0, np.zeros((4, 4, 2), np.int16)
        raise InputError("src.nii.gz", "file ends early", check="read")

    with pytest.raises(InputError), StoreWriter(final, PARAMS, {}) as writer:
        writer.write_array(IMAGE_PATH, (4, 4, 4), np.dtype(np.int16), broken())
    np.testing.assert_array_equal(open_array(final)[...], old)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_float_mask_becomes_labels_only_if_integral(tmp_path: Path) -> None:
    mask = np.zeros((6, 6, 6), np.float64)
    mask[1:3, 1:3, 1:3] = 20.0
    with StoreWriter(tmp_path / "m.zarr", PARAMS, {}) as writer:
        writer.write_array(
            LABELS_PATH,
            mask.shape,
            np.dtype(np.uint8),
            as_labels(_slabs(mask, 2), Path("m.nii.gz")),
        )
    stored = open_array(tmp_path / "m.zarr", LABELS_PATH)[...]
    assert stored.dtype == np.uint8 and stored.max() == 20
    mask[0, 0, 5] = 19.5
    with pytest.raises(
        InputError,
        match=r"m\.nii\.gz: mask holds non-integer values \(expected whole labels, got e\.g\. 19\.5",
    ):
        list(as_labels(_slabs(mask, 2), Path("m.nii.gz")))


def _f_bytes(volume: np.ndarray) -> bytes:
    return np.asfortranarray(volume).reshape(-1, order="F").tobytes()


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("shape", [(20, 17, 33), (8, 8, 8), (3, 40, 5), (17, 9, 64)])
def test_zarr_python_reads_every_level_bit_for_bit(tmp_path: Path, dtype, shape) -> None:
    rng = np.random.default_rng(sum(shape))
    vol = rng.integers(0, 200, shape).astype(dtype)
    vol[: shape[0] // 2] = 0  # some chunks all fill: left out of their shard
    final = tmp_path / "x.zarr"
    with StoreWriter(final, PARAMS, {}) as writer:
        # Odd slab depths: slabs never line up with chunks or shards.
        info = writer.write_array(IMAGE_PATH, vol.shape, vol.dtype, _slabs(vol, 5))
    assert info.voxel_xxh3 == xxhash.xxh3_128_hexdigest(_f_bytes(vol))
    assert info.verified and len(info.levels) == 3
    for level, level_shape in enumerate(info.levels):
        step = 2**level
        expected = vol[::step, ::step, ::step]
        array = open_array(final, str(level))
        assert array.shape == level_shape == expected.shape
        assert array.dtype == vol.dtype
        np.testing.assert_array_equal(array[...], expected)


def test_all_fill_volume_stores_no_shard_file(tmp_path: Path) -> None:
    vol = np.zeros((20, 17, 33), np.uint8)
    with StoreWriter(tmp_path / "z.zarr", PARAMS, {}) as writer:
        writer.write_array(IMAGE_PATH, vol.shape, vol.dtype, _slabs(vol, 7))
    assert not list((tmp_path / "z.zarr").rglob("c/*/*/*"))
    np.testing.assert_array_equal(open_array(tmp_path / "z.zarr")[...], vol)


def test_array_metadata_names_axes_codecs_and_shards(tmp_path: Path) -> None:
    params = VolumeParams(
        chunks=(8, 8, 8), shard_chunks=(2, 2, 2), codec="lz4", level=5, blocksize=0
    )
    vol = np.arange(16 * 16 * 16, dtype=np.int16).reshape(16, 16, 16)
    with StoreWriter(tmp_path / "m.zarr", params, {}) as writer:
        writer.write_array(IMAGE_PATH, vol.shape, vol.dtype, _slabs(vol, 16))
    meta = json.loads((tmp_path / "m.zarr" / IMAGE_PATH / "zarr.json").read_text())
    assert meta["dimension_names"] == ["z", "y", "x"]  # = the NGFF axes, as NGFF 0.5 requires
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [16, 16, 16]
    sharding = meta["codecs"][0]
    assert sharding["name"] == "sharding_indexed"
    assert sharding["configuration"]["chunk_shape"] == [8, 8, 8]
    inner = {c["name"]: c.get("configuration") for c in sharding["configuration"]["codecs"]}
    assert inner["transpose"] == {"order": [2, 1, 0]}
    assert inner["blosc"]["cname"] == "lz4" and inner["blosc"]["clevel"] == 5
    assert inner["blosc"]["shuffle"] == "shuffle" and inner["blosc"]["typesize"] == 2
    # One shard file holds all 8 chunks of the 16**3 array.
    assert [
        p.relative_to(tmp_path / "m.zarr" / IMAGE_PATH).as_posix()
        for p in (tmp_path / "m.zarr" / IMAGE_PATH).rglob("c/*/*/*")
    ] == ["c/0/0/0"]


def _oblique_affine() -> np.ndarray:
    angle = np.deg2rad(5.0)
    rot = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    base = np.column_stack([[0, -1, 0], [0, 0, -1], [1, 0, 0]]).astype(float)  # P, I, R
    affine = np.eye(4)
    affine[:3, :3] = rot @ base @ np.diag([0.8, 1.0, 2.5])
    affine[:3, 3] = [-77.7, 218.0, -808.6]
    return affine


def test_ngff_metadata_validates_and_maps_voxels_to_world(tmp_path: Path) -> None:
    from ngff_zarr import from_ngff_zarr
    from ngff_zarr.validate import validate

    affine = _oblique_affine()
    vol = np.random.default_rng(1).integers(-1000, 2000, (20, 18, 30)).astype(np.int16)
    mask = np.zeros(vol.shape, np.uint8)
    mask[4:9, 5:12, 3:20] = 20
    mask[10:14, 5:12, 3:20] = 21
    final = tmp_path / "n.zarr"
    with StoreWriter(final, PARAMS, {"verse_etl": {"k": 1}}, affine=affine) as writer:
        writer.write_array(IMAGE_PATH, vol.shape, vol.dtype, _slabs(vol, 8))
        writer.write_array(
            LABELS_PATH, mask.shape, mask.dtype, _slabs(mask, 8), label_names={20: "L1", 21: "L2"}
        )
    root = zarr.open_group(final, mode="r")
    validate(dict(root.attrs), version="0.5", model="image", strict=True)
    assert root.attrs["verse_etl"] == {"k": 1}
    assert root["labels"].attrs["ome"]["labels"] == ["vertebrae"]
    label_attrs = dict(root["labels/vertebrae"].attrs)
    validate(label_attrs, version="0.5", model="label", strict=True)
    validate(label_attrs, version="0.5", model="image", strict=True)
    image_label = label_attrs["ome"]["image-label"]
    assert image_label["properties"] == [
        {"label-value": 20, "level": "L1"},
        {"label-value": 21, "level": "L2"},
    ]
    assert image_label["source"] == {"image": "../../"}
    assert len({tuple(c["rgba"]) for c in image_label["colors"]}) == 2

    # A real NGFF reader opens both multiscale images with the voxels of every level.
    for group, data in (("", vol), ("labels/vertebrae", mask)):
        multiscales = from_ngff_zarr(final / group if group else final, validate=True)
        assert len(multiscales.images) == 3
        for level, image in enumerate(multiscales.images):
            step = 2**level
            np.testing.assert_array_equal(np.asarray(image.data), data[::step, ::step, ::step])
        # NGFF coordinates are RAS+ turned onto the voxel axes: R @ (scale v + t) = affine v.
        level1 = multiscales.images[1]
        assert level1.dims == ("z", "y", "x")
        scale = np.array([level1.scale[d] for d in level1.dims])
        translation = np.array([level1.translation[d] for d in level1.dims])
        voxel = np.array([3.0, 4.0, 5.0])  # level-1 index
        directions = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
        world = affine[:3, :3] @ (voxel * 2) + affine[:3, 3]
        np.testing.assert_allclose(directions @ (scale * voxel + translation), world, atol=1e-9)


def _shard_frames(shard: Path, per_shard: tuple[int, int, int]) -> dict:
    """The chunk frames of a shard file as its index gives them."""
    data = shard.read_bytes()
    entries = decode_index(data, per_shard, shard)
    return {
        local: data[int(entries[local][0]) : int(entries[local][0] + entries[local][1])]
        for local in np.ndindex(per_shard)
    }


def test_verify_shard_file_detects_changed_bytes_and_index(tmp_path: Path) -> None:
    vol = np.random.default_rng(2).integers(-1000, 2000, (16, 16, 16)).astype(np.int16)
    final = tmp_path / "v.zarr"
    with StoreWriter(final, PARAMS, {}) as writer:
        writer.write_array(IMAGE_PATH, vol.shape, vol.dtype, _slabs(vol, 16))
    shard = final / IMAGE_PATH / "c" / "0" / "0" / "0"
    frames = _shard_frames(shard, (2, 2, 2))
    verify_shard_file(shard, (2, 2, 2), frames)  # as written: no error
    with pytest.raises(StoreMismatchError, match=r"chunk \(1, 0, 1\) should be absent"):
        verify_shard_file(shard, (2, 2, 2), {**frames, (1, 0, 1): None})
    data = bytearray(shard.read_bytes())
    data[40] ^= 0xFF  # inside the first chunk's Blosc frame
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreMismatchError, match=r"chunk \(0, 0, 0\) reads back different bytes"):
        verify_shard_file(shard, (2, 2, 2), frames)
    data[-10] ^= 0xFF  # inside the index: its CRC32C no longer matches
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreMismatchError, match="index checksum"):
        verify_shard_file(shard, (2, 2, 2), frames)


class _LyingBlosc:
    """Blosc that encodes chunk number ``bad`` with one voxel changed: a valid frame of other
    voxels, as a codec or memory fault would give."""

    def __init__(self, blosc, bad: int) -> None:
        self.blosc, self.bad, self.count = blosc, bad, 0

    def encode(self, flat):
        self.count += 1
        if self.count == self.bad:
            flat = flat.copy()
            flat[3] += 1
        return self.blosc.encode(flat)

    def decode(self, frame, out=None):
        return self.blosc.decode(frame, out=out)


@pytest.mark.parametrize("verify", [True, False])
def test_writer_catches_a_chunk_that_decodes_to_other_voxels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verify: bool
) -> None:
    vol = np.random.default_rng(4).integers(-1000, 2000, (16, 16, 24)).astype(np.int16)
    real = ChunkCodec.numcodecs
    # The 6th encoded chunk (after the stream's own all-fill frame): level 0, not an edge.
    monkeypatch.setattr(ChunkCodec, "numcodecs", lambda self: _LyingBlosc(real(self), 7))
    params = VolumeParams(chunks=(8, 8, 8), shard_chunks=(2, 2, 2), threads=1, verify=verify)
    final = tmp_path / "lie.zarr"
    if not verify:  # the fault goes unnoticed into the store: verification is what catches it
        with StoreWriter(final, params, {}) as writer:
            writer.write_array(IMAGE_PATH, vol.shape, vol.dtype, _slabs(vol, 8))
        assert not np.array_equal(open_array(final)[...], vol)
        return
    with (
        pytest.raises(InputError, match="decodes to other voxels") as info,
        StoreWriter(final, params, {}) as writer,
    ):
        writer.write_array(IMAGE_PATH, vol.shape, vol.dtype, _slabs(vol, 8))
    assert info.value.check == "store_verify"
    assert not final.exists() and not list(tmp_path.glob("*.tmp-*"))


def test_writer_catches_a_shard_file_that_reads_back_different(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vol = np.random.default_rng(5).integers(-1000, 2000, (16, 16, 16)).astype(np.int16)

    class Flipping:
        """A shard file whose first chunk reaches the disk with its first byte changed."""

        def __init__(self, f) -> None:
            self.f, self.first = f, True

        def write(self, data: bytes) -> int:
            if self.first:
                self.first, data = False, bytes([data[0] ^ 1]) + data[1:]
            return self.f.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

    def flipping_open(path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)  # noqa: SIM115 (closed by the caller's with)
        return Flipping(f) if "w" in mode else f

    monkeypatch.setattr(shards, "open", flipping_open, raising=False)
    with (
        pytest.raises(InputError, match="reads back different bytes") as info,
        StoreWriter(tmp_path / "flip.zarr", PARAMS, {}) as writer,
    ):
        writer.write_array(IMAGE_PATH, vol.shape, vol.dtype, _slabs(vol, 16))
    assert info.value.check == "store_verify"
    assert not (tmp_path / "flip.zarr").exists()


def test_lossy_slab_dtype_is_refused(tmp_path: Path) -> None:
    vol = np.full((4, 4, 4), 1.5, np.float32)
    with (
        pytest.raises(ValueError, match="without loss"),
        StoreWriter(tmp_path / "f.zarr", PARAMS, {}) as writer,
    ):
        writer.write_array(IMAGE_PATH, vol.shape, np.dtype(np.int16), _slabs(vol, 4))
    assert not (tmp_path / "f.zarr").exists()


KILL_SCRIPT = """
import sys, time
from pathlib import Path
import numpy as np
from verse_etl.params import VolumeParams
from verse_etl.stores.volumes import IMAGE_PATH, StoreWriter

final, marker = Path(sys.argv[1]), Path(sys.argv[2])
vol = np.random.default_rng(5).integers(-1000, 2000, (64, 64, 96)).astype(np.int16)

def slabs():
    for k0 in range(0, 96, 16):
        if k0 == 64:  # two shards handed to the writer: say so, then wait to be killed
            marker.write_text("mid-write")
            time.sleep(120)
        yield k0, vol[:, :, k0 : k0 + 16]

params = VolumeParams(chunks=(16, 16, 16), shard_chunks=(2, 2, 2))
with StoreWriter(final, params, {}) as writer:
    writer.write_array(IMAGE_PATH, vol.shape, vol.dtype, slabs())
"""


def _kill_mid_write(final: Path, marker: Path) -> Path:
    """Run a real conversion in a child process and SIGKILL it mid-write; return its tmp dir."""
    script = final.parent / "convert.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, str(script), str(final), str(marker)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, "the conversion ended before it could be killed"
            assert time.monotonic() < deadline, "the conversion never got half-way"
            time.sleep(0.02)
        tmp = final.with_name(f"{final.name}.tmp-{child.pid}")
        # Wait for shard files of the first half to be on disk: the kill is really mid-write.
        while not list((tmp / IMAGE_PATH).rglob("c/*/*/*")):
            assert time.monotonic() < deadline, "no shard file was written"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return tmp


def test_killed_conversion_leaves_no_store_and_next_run_cleans_up(tmp_path: Path) -> None:
    final = tmp_path / "k.zarr"
    tmp = _kill_mid_write(final, tmp_path / "marker")
    assert not final.exists()
    assert tmp.is_dir()  # the leftover is beside, never at, the final path
    vol = np.ones((8, 8, 8), np.int16)
    with StoreWriter(final, PARAMS, {}) as writer:
        writer.write_array(IMAGE_PATH, vol.shape, vol.dtype, _slabs(vol, 8))
    assert not tmp.exists()  # the dead writer's leftover is gone
    np.testing.assert_array_equal(open_array(final)[...], vol)


def test_killed_rewrite_keeps_the_old_store(tmp_path: Path) -> None:
    final = tmp_path / "k.zarr"
    old = np.full((8, 8, 8), 7, np.int16)
    with StoreWriter(final, PARAMS, {}) as writer:
        writer.write_array(IMAGE_PATH, old.shape, old.dtype, _slabs(old, 8))
    _kill_mid_write(final, tmp_path / "marker")
    np.testing.assert_array_equal(open_array(final)[...], old)


def test_encoder_threads_run_at_lower_priority_than_the_decoder(tmp_path: Path) -> None:
    vol = np.ones((8, 8, 16), np.int16)
    seen: list[int] = []

    def niceness(_k0: int, _row: np.ndarray) -> None:  # called on the writer's in-order thread
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    base = os.getpriority(os.PRIO_PROCESS, 0)
    params = VolumeParams(chunks=(8, 8, 8), shard_chunks=(2, 2, 2), encoder_nice=3)
    with StoreWriter(tmp_path / "n.zarr", params, {}) as writer:
        writer.write_array(IMAGE_PATH, vol.shape, vol.dtype, _slabs(vol, 8), on_slab=niceness)
    assert seen == [min(19, base + 3)] * 2
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # caller unchanged
