"""Memory and time of one VerSe case build on a large float64 mask (512x512x229, 480 MB whole).

Generates a real-size VerSe'20 scan with the sample phantom (int16 CT and a float64 vertebra mask,
gzipped NIfTI-1 as nibabel writes them), then builds the case (CT + mask to Zarr, HU histogram,
label statistics with connected components, centroids) in a fresh process and prints its wall
time and peak resident memory, next to the memory after imports and the size of the mask as one
float64 array.

    python benchmarks/label_stats.py [--depth-mib 16]
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

_CHILD = r"""
import json, sys, time
from pathlib import Path
import verse_etl.verse.case as case
import verse_etl.verse.store as store
from verse_etl.params import CheckParams, VolumeParams
from verse_etl.sources.verse import discover_verse_sources

root, out, depth_mib = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
store.MASK_SLAB_BYTES = depth_mib << 20
(scan,) = discover_verse_sources(root).scans
def hwm():  # this process's own peak RSS (KiB): see benchmarks/peak_memory.py
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
before = hwm()
start = time.perf_counter()
result = case.build_verse_scan(scan, root, out, VolumeParams(), CheckParams())
seconds = time.perf_counter() - start
peak = hwm()
print(json.dumps({"seconds": seconds, "rss_after_imports_kib": before, "peak_rss_kib": peak,
                  "vertebrae": len(result.rows.get("vertebrae", [])),
                  "quarantine": [q.check for q in result.quarantine]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth-mib", type=int, default=16, help="MiB of source mask read at once")
    args = parser.parse_args()

    import numpy as np

    from verse_etl_sample.verse import VerseCase, write_verse_case

    work = Path(tempfile.mkdtemp(prefix="verse-etl-labels-"))
    try:
        start = time.perf_counter()
        case = VerseCase("verse20", "gl003", None, "ax", "float64", center_label=19)
        manifest, _ = write_verse_case(
            work / "src", case, size="real", index=1, rng=np.random.default_rng(0)
        )
        t_generate = time.perf_counter() - start
        mask_file = work / "src" / manifest.mask
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, str(work / "src" / "verse"), str(work / "out"),
             str(args.depth_mib)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        figures = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    whole_mb = np.prod(manifest.shape) * 8 / 1e6
    print(
        f"mask: {manifest.shape} float64, {whole_mb:.0f} MB as one array; "
        f"gzipped file {mask_file.name}; generated in {t_generate:.1f} s"
    )
    print(
        f"case build (CT + mask -> Zarr, HU histogram, label statistics): "
        f"{figures['seconds']:.1f} s, {figures['vertebrae']} vertebrae, "
        f"quarantine {figures['quarantine'] or 'none'}"
    )
    print(f"peak RSS: {figures['peak_rss_kib'] / 1024:.0f} MiB "
          f"(after imports {figures['rss_after_imports_kib'] / 1024:.0f} MiB; "
          f"mask read {args.depth_mib} MiB at a time; the child's own VmHWM, "
          f"read by itself)")  # fmt: skip
    print("load average (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
