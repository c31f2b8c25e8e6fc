"""Speed and memory of converting one real-size MosMed study (512 x 512 x ~400 thin series and
its 5 mm decoy): as a folder and as a .tar.gz, uncompressed and RLE.

Each conversion runs in a fresh child process so that its peak RSS is its own. Prints, per
variant: files and MB read, seconds for the whole study (headers, geometry, unpacking, stores,
rows), voxel throughput (MB of int16 HU per second) and peak RSS next to the size of the thin
volume, which a slice-streaming converter must stay far below.

    python benchmarks/mosmed.py [--transfer-syntax explicit rle] [--shard-chunks 8 8 2]

Memory is bounded by the slab streamed at once (one shard deep, 128 slices of 512 x 512 with
the default volumes params), not by the series length.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peak_memory import HOW, own_peak_mb


def convert(root: Path, out: Path, shard_chunks: tuple[int, int, int]) -> dict[str, float]:
    """Build every study below ``root`` (child process side)."""
    from verse_etl.mosmed.case import build_mosmed_study
    from verse_etl.params import MosmedParams, VolumeParams
    from verse_etl.sources.mosmed import discover_mosmed

    start = time.perf_counter()
    voxels = 0
    for study in discover_mosmed(root):
        volumes = VolumeParams(shard_chunks=shard_chunks)
        result = build_mosmed_study(study, root, out, volumes, MosmedParams())
        for row in result.rows.get("series", []):
            if row["is_volume"]:
                voxels += row["rows"] * row["columns"] * row["n_slices"]
        assert not result.quarantine, result.quarantine
    seconds = time.perf_counter() - start
    # Its own peak (VmHWM): ru_maxrss would carry the forking parent's size across exec.
    peak_mb = own_peak_mb()
    return {"seconds": seconds, "voxel_mb": voxels * 2 / 1e6, "peak_rss_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfer-syntax", nargs="+", default=["explicit", "rle"])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--shard-chunks",
        nargs=3,
        type=int,
        default=[8, 8, 2],
        help="volumes.shard_chunks: the slab streamed at once is one shard deep",
    )
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(convert(*args.child, tuple(args.shard_chunks))))
        return

    import numpy as np

    from verse_etl_sample.edge_cases import pack_study
    from verse_etl_sample.mosmed import write_mosmed_sample_study

    print(HOW)
    print("load average (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    work = Path(tempfile.mkdtemp(prefix="verse-etl-mosmed-", dir=args.workdir))
    try:
        for syntax in args.transfer_syntax:
            src = work / syntax
            start = time.perf_counter()
            manifest, _ = write_mosmed_sample_study(
                src, 0, size="real", rng=np.random.default_rng(0), transfer_syntax=syntax
            )
            generated = time.perf_counter() - start
            dicom = src / "mosmed" / "dicom"
            size_mb = sum(p.stat().st_size for p in (dicom / manifest.folder).rglob("*")) / 1e6
            n_files = sum(1 for p in (dicom / manifest.folder).rglob("*") if p.is_file())
            thin_mb = manifest.rows * manifest.columns * manifest.n_slices * 2 / 1e6
            print(
                f"{syntax}: study of {n_files} files, {size_mb:.0f} MB on disk; thin series "
                f"{manifest.rows}x{manifest.columns}x{manifest.n_slices} = {thin_mb:.0f} MB "
                f"of int16 (generated in {generated:.1f} s)"
            )
            for layout in ("folder", "tar.gz"):
                if layout == "tar.gz":
                    start = time.perf_counter()
                    archive = pack_study(dicom, manifest.folder)
                    print(
                        f"  packed into {archive.stat().st_size / 1e6:.0f} MB .tar.gz in "
                        f"{time.perf_counter() - start:.1f} s"
                    )
                out = work / f"out-{syntax}-{layout}"
                child = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        str(src / "mosmed"),
                        str(out),
                        "--shard-chunks",
                        *map(str, args.shard_chunks),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                r = json.loads(child.stdout.strip().splitlines()[-1])
                print(
                    f"  {layout:7s}: {r['seconds']:6.1f} s for the study, "
                    f"{r['voxel_mb'] / r['seconds']:6.1f} MB/s of HU voxels, "
                    f"peak RSS {r['peak_rss_mb']:6.0f} MB"
                )
                shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
