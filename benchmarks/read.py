"""Training reads: random 96^3 patches per second from a volume store against nibabel reading the
source ``.nii.gz``, and the light reader's import + first case, in one run.

Generates a real-size phantom CT once (512x512x300 int16, gzip level 1 as nibabel writes, LPS
axial, as ``benchmarks/convert.py`` does) and converts it with ``StoreWriter`` and the
``params.yaml`` volumes settings, in the store frame (superior, posterior, left), as the case
builders do. Each variant then runs in its own
child process, which prints patches per second (best of ``--repeat`` rounds) and its own peak
RSS:

  store             verse_etl.dataset.read_patch on the Zarr store: only the chunks a patch overlaps
  nibabel-load      what MONAI's LoadImage does per sample: nibabel decodes the whole .nii.gz,
                    then the patch is cut out (np.asanyarray(img.dataobj)[patch])
  nibabel-proxy     nibabel's array proxy sliced to the patch (inflates the gzip up to the patch)
  first-case        `import verse_etl.dataset` + Dataset(--build)[0] in a fresh interpreter
                    (wall and CPU seconds: on a loaded machine the CPU time says what an idle
                    one would take; needs a build folder, e.g. data/build after `make run`)

Patch positions are the same random draws for every variant (seed 0; the store's in its own
axis order, a permutation of the source's). The page cache holds the
files after the first round, as it would during training on a machine with enough memory.

    python benchmarks/read.py [--work /tmp/verse-etl-read] [--patches 200] [--repeat 3]
                              [--build data/build]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (512, 512, 300)
SPACING = (0.3125, 0.3125, 1.25)
PATCH = (96, 96, 96)


def generate(work: Path) -> tuple[Path, Path]:
    """The phantom CT (.nii.gz) and its store, made once and kept in ``work``."""
    import numpy as np

    from verse_etl.geometry.store_frame import store_frame
    from verse_etl.io.nifti import NiftiVoxelReader, read_nifti_info
    from verse_etl.params import load_params
    from verse_etl.stores.volumes import IMAGE_PATH, StoreWriter
    from verse_etl_sample.nifti import stored_affine, write_nifti_gz
    from verse_etl_sample.phantom import iter_slabs
    from verse_etl_sample.verse import NOISE_HU, build_case_phantom, plan_cases

    work.mkdir(parents=True, exist_ok=True)
    nifti, store = work / "ct-512x512x300.nii.gz", work / "ct-512x512x300.zarr"
    if not nifti.exists():
        rng = np.random.default_rng(0)
        affine = stored_affine(np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0]))
        centre = affine[:3, :3] @ ((np.asarray(SHAPE) - 1) / 2) + affine[:3, 3]
        phantom = build_case_phantom(
            plan_cases(4)[3], centre + np.array([0.0, 20.0, 0.0]), rng, 1.2
        )
        slabs = iter_slabs(phantom, SHAPE, affine, noise_hu=NOISE_HU, rng=rng, depth=16)
        tmp = nifti.with_name(nifti.name + ".tmp")
        write_nifti_gz(tmp, SHAPE, np.int16, affine, (s.hu for s in slabs))
        os.replace(tmp, nifti)
    if not store.exists():
        info = read_nifti_info(nifti)
        volumes = load_params(ROOT / "params.yaml").build.volumes
        frame = store_frame(info.affine, info.shape)
        with StoreWriter(store, volumes, {}, affine=info.affine, frame=frame) as writer:
            writer.write_reader(IMAGE_PATH, info.shape, NiftiVoxelReader(info))
    return nifti, store


def offsets(n: int, shape: tuple[int, ...] = SHAPE) -> list[tuple[int, int, int]]:
    import numpy as np

    from verse_etl.dataset import random_offset

    rng = np.random.default_rng(0)
    return [random_offset(shape, PATCH, rng) for _ in range(n)]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(variant: str, path: str, patches: int, repeat: int) -> None:
    """Run one variant in this (child) process and print its figures as JSON."""
    import numpy as np

    if variant == "first-case":
        start, cpu = time.perf_counter(), time.process_time()
        from verse_etl.dataset import Dataset

        sample = Dataset(path)[0]
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        assert sample["image"].size > 0
        heavy = sorted(
            m
            for m in ("prefect", "dvc", "dask", "pydicom", "nibabel", "pandera", "pandas")
            if m in sys.modules
        )
        print(
            json.dumps(
                {"seconds": seconds, "cpu": cpu_seconds, "imported": heavy, "peak_mb": _peak_mb()}
            )
        )
        return
    positions = offsets(patches)
    if variant == "store":
        import zarr

        from verse_etl.dataset import read_patch
        from verse_etl.stores.volumes import IMAGE_PATH

        array = zarr.open_array(Path(path) / IMAGE_PATH, mode="r")
        positions = offsets(patches, array.shape)

        def read(offset: tuple[int, int, int]) -> np.ndarray:
            return read_patch(array, offset, PATCH)
    else:
        import nibabel as nib

        def read(offset: tuple[int, int, int]) -> np.ndarray:
            box = tuple(slice(o, o + n) for o, n in zip(offset, PATCH, strict=True))
            proxy = nib.load(path).dataobj
            if variant == "nibabel-load":
                return np.asanyarray(proxy)[box]
            return np.asarray(proxy[box])

    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        for offset in positions:
            patch = read(offset)
            assert patch.shape == PATCH
        best = max(best, len(positions) / (time.perf_counter() - start))
    print(json.dumps({"patches_per_s": best, "peak_mb": _peak_mb()}))


def run(variant: str, path: Path, patches: int, repeat: int) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", variant, str(path), str(patches), str(repeat)],
        capture_output=True,
        text=True,
        cwd="/",  # only the installed package, as a user's script would
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/verse-etl-read"))
    parser.add_argument("--patches", type=int, default=200, help="patches per store round")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--build", type=Path, default=ROOT / "data" / "build")
    args = parser.parse_args()
    nifti, store = generate(args.work)
    print(f"load: {os.getloadavg()}; patch {PATCH} of a {SHAPE} int16 CT", flush=True)
    nib_patches = max(3, args.patches // 50)  # a whole-volume decode per patch: fewer draws
    for variant, path, n in (
        ("store", store, args.patches),
        ("nibabel-load", nifti, nib_patches),
        ("nibabel-proxy", nifti, nib_patches),
    ):
        result = run(variant, path, n, args.repeat)
        print(
            f"{variant:14s} {result['patches_per_s']:8.2f} patches/s  "
            f"peak RSS {result['peak_mb']:6.0f} MB  ({n} patches x {args.repeat} rounds)",
            flush=True,
        )
    if args.build.is_dir():
        first = run("first-case", args.build.resolve(), 0, 1)
        print(
            f"first-case     {first['seconds']:8.2f} s import + Dataset(...)[0] "
            f"({first['cpu']:.2f} s CPU)  "
            f"peak RSS {first['peak_mb']:6.0f} MB  build stack imported: {first['imported'] or 'none'}"
        )
    else:
        print(f"first-case     skipped: no build at {args.build} (run `make run` or pass --build)")
    print(f"load: {os.getloadavg()}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
