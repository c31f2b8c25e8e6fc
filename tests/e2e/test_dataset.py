"""Training-ready access to a build: light imports, dict samples, patches that read only their
chunks, batches through PyTorch's DataLoader, the same over S3, and a clear error without volumes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr
from zarr.abc.store import ByteRequest
from zarr.storage import LocalStore, WrapperStore

from tests.e2e.s3_server import BUCKET, S3_ENV
from verse_etl.dataset import Dataset, VolumesNotPulledError, collate, read_patch
from verse_etl.params import VolumeParams
from verse_etl.stores.volumes import IMAGE_PATH, StoreWriter

ROOT = Path(__file__).resolve().parents[2]
BUILD_STACK = ("prefect", "dvc", "dask", "distributed", "pydicom", "nibabel", "pandera", "scipy")
# pandas is no build tool, but a reader that needs it for the first case cannot start in < 1 s.
NOT_FOR_A_SAMPLE = (*BUILD_STACK, "pandas", "duckdb")


def test_reading_a_case_and_exporting_import_none_of_the_build_stack(tiny_build) -> None:
    out, *_ = tiny_build
    code = (
        "import sys\n"
        "from verse_etl.dataset import Dataset\n"
        "import verse_etl.read.export\n"
        f"sample = Dataset({str(out)!r})[0]\n"
        "assert sample['image'].size > 0\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {NOT_FOR_A_SAMPLE!r}))\n"
    )
    # Outside the repository, so that only the installed package is importable.
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


def test_samples_are_dicts_of_the_source_voxels_with_a_transform_hook(tiny_build) -> None:
    out, src, manifest = tiny_build
    seen = []
    ds = Dataset(out, sources=("verse",), transform=lambda s: seen.append(s["id"]) or s)
    assert ds.ids == sorted(s.scan_id for s in manifest.verse)
    for index, scan in enumerate(sorted(manifest.verse, key=lambda s: s.scan_id)):
        sample = ds[index]
        ct, mask = nib.load(src / scan.ct), nib.load(src / scan.mask)
        # The source's voxels, turned the right way up (superior, posterior, left) without
        # resampling: nibabel's own reorientation of the source gives the same array.
        target = nib.orientations.axcodes2ornt(("S", "P", "L"))
        turn = nib.orientations.ornt_transform(nib.io_orientation(ct.affine), target)
        upright = nib.orientations.apply_orientation(np.asanyarray(ct.dataobj), turn)
        np.testing.assert_array_equal(sample["image"][0], upright)
        assert sample["image"].dtype == np.int16 and sample["image"].shape[0] == 1
        labels = nib.orientations.apply_orientation(np.asanyarray(mask.dataobj), turn)
        np.testing.assert_array_equal(sample["label"][0], labels)
        assert "".join(nib.aff2axcodes(sample["affine"])) == "SPL"
        expected = ct.affine @ nib.orientations.inv_ornt_aff(turn, ct.shape)
        np.testing.assert_allclose(sample["affine"], expected, atol=1e-6)
        zooms = nib.affines.voxel_sizes(sample["affine"])
        np.testing.assert_allclose(sample["spacing"], zooms, rtol=1e-6)
        assert sample["id"] == scan.scan_id and sample["source"] == "verse"
        assert sorted(v["label"] for v in sample["vertebrae"]) == sorted(scan.labels)
    assert seen == ds.ids
    mosmed = Dataset(out, sources=("mosmed",))
    sample = mosmed[0]
    assert sample["label"] is None and sample["source"] == "mosmed" and sample["vertebrae"]
    case = mosmed.case(0)
    assert case.mask is None and not case.vertebrae.empty


def test_patches_are_the_volume_at_their_offset_with_their_own_affine(tiny_build) -> None:
    out, *_ = tiny_build
    whole = Dataset(out, sources=("verse",))
    patched = Dataset(out, sources=("verse",), patch_size=(24, 40, 80), seed=3)
    for index in range(len(whole)):
        full, patch = whole[index], patched[index]
        assert patch["image"].shape == (1, 24, 40, 80) == patch["label"].shape
        offset = patch["offset"]
        expected = read_patch(full["image"][0], offset, (24, 40, 80), fill=-1024)
        np.testing.assert_array_equal(patch["image"][0], expected)
        np.testing.assert_array_equal(
            patch["label"][0], read_patch(full["label"][0], offset, (24, 40, 80))
        )
        # Patch index 0 is stored voxel `offset`: the same world point.
        np.testing.assert_allclose(
            patch["affine"] @ [0, 0, 0, 1], full["affine"] @ [*offset, 1], atol=1e-9
        )
        np.testing.assert_array_equal(patched[index]["offset"], offset)  # same seed, epoch
    offsets = [tuple(patched[i]["offset"]) for i in range(len(patched))]
    patched.set_epoch(1)
    assert [tuple(patched[i]["offset"]) for i in range(len(patched))] != offsets


class _CountingStore(WrapperStore):
    """A store that records every (key, byte range) read through it."""

    reads: list[tuple[str, object]]

    async def get(self, key: str, prototype, byte_range: ByteRequest | None = None):  # type: ignore[override]
        self.reads.append((key, byte_range))
        return await self._store.get(key, prototype, byte_range)


def test_a_patch_reads_only_the_chunks_it_overlaps(tmp_path: Path) -> None:
    vol = np.random.default_rng(4).integers(-1000, 2000, (64, 64, 64)).astype(np.int16)
    params = VolumeParams(chunks=(16, 16, 16), shard_chunks=(2, 2, 2))
    with StoreWriter(tmp_path / "p.zarr", params, {}) as writer:
        writer.write_array(IMAGE_PATH, vol.shape, vol.dtype, [(0, vol)])
    store = _CountingStore(LocalStore(tmp_path / "p.zarr", read_only=True))
    store.reads = []
    array = zarr.open_array(store, path=IMAGE_PATH, mode="r")
    store.reads.clear()
    patch = read_patch(array, (20, 4, 30), (10, 10, 10))
    np.testing.assert_array_equal(patch, vol[20:30, 4:14, 30:40])
    # The patch overlaps chunks (1, 0, 1) and (1, 0, 2): both in shard (0, 0, 0) and (0, 0, 1).
    shards = {key for key, _ in store.reads}
    assert shards == {f"{IMAGE_PATH}/c/0/0/0", f"{IMAGE_PATH}/c/0/0/1"}, store.reads
    # Each shard's index (its last bytes), then one byte range per overlapped chunk: never a
    # whole shard file.
    kinds = sorted(type(r).__name__ for _, r in store.reads)
    assert kinds == ["RangeByteRequest"] * 2 + ["SuffixByteRequest"] * 2, store.reads


def test_batches_through_torch_dataloader(tiny_build) -> None:
    torch = pytest.importorskip(
        "torch", reason="PyTorch not installed: `make test` installs it from the local wheel"
    )
    out, *_ = tiny_build
    ds = Dataset(out, sources=("verse",), patch_size=(16, 16, 16), seed=1)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate, num_workers=1)
    batches = list(loader)
    assert [b["image"].shape for b in batches] == [torch.Size([2, 1, 16, 16, 16])] * 2
    assert batches[0]["image"].dtype == torch.int16 and batches[0]["label"].dtype == torch.uint8
    assert batches[0]["affine"].shape == (2, 4, 4) and len(batches[0]["vertebrae"]) == 2
    first = ds[0]
    np.testing.assert_array_equal(batches[0]["image"][0].numpy(), first["image"])
    assert [i for b in batches for i in b["id"]] == ds.ids


def test_same_samples_over_s3(tiny_build, s3_endpoint: str, monkeypatch) -> None:
    import s3fs

    out, *_ = tiny_build
    for key, value in {**S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(key, value)
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    prefix = f"{BUCKET}/dataset-test"
    for sub in ("tables", "volumes"):
        fs.put(str(out / sub), f"{prefix}/", recursive=True)
    local = Dataset(out, patch_size=(16, 16, 16))
    remote = Dataset(f"s3://{prefix}", patch_size=(16, 16, 16))
    assert remote.ids == local.ids
    for index in (0, len(local) - 1):
        a, b = local[index], remote[index]
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["affine"], b["affine"])
        assert a["vertebrae"] == b["vertebrae"]


def test_missing_volumes_say_which_command_to_run(tiny_build, tmp_path: Path) -> None:
    out, *_ = tiny_build
    tables_only = tmp_path / "build"
    shutil.copytree(out / "tables", tables_only / "tables")
    ds = Dataset(tables_only)
    with pytest.raises(VolumesNotPulledError, match=r"run `dvc pull .*volumes/verse`") as info:
        ds[0]
    assert str(info.value).startswith(str(tables_only / "volumes" / "verse")), info.value
