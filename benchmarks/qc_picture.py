"""Memory and time of one VerSe QC picture drawn from a large store (512x512x1400 int16, 734 MB).

Writes a store of a synthetic full spine (C1..L5 boxes on a 0.7 x 0.7 x 0.5 mm LPS grid, 700 mm
tall, pyramid levels 1-2) slab by slab, then draws its QC picture in a fresh process and prints
that process's wall time and peak resident memory, next to its memory after imports and the size
of level 0 as int16 and as float32 (what reading the whole scan would cost).

    python benchmarks/qc_picture.py [--slab-mib 32] [--slices 1400]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = r"""
import json, sys, time
from pathlib import Path
import pandas as pd
from verse_etl.report.qc import verse_picture

def status(key):  # this process's own figures (ru_maxrss would count the parent before exec)
    line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
    return int(line.split()[1])

store, rows, png, slab_mib = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
vertebrae = pd.read_json(rows)
before = status("VmRSS")
start = time.perf_counter()
picture = verse_picture(store, vertebrae, png, title="benchmark", slab_bytes=slab_mib << 20)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss_after_imports_kib": before, "peak_rss_kib": status("VmHWM"),
                  "size": [picture.width, picture.height], "level": picture.level}))
"""


def _write_store(path: Path, slices: int):
    import numpy as np
    import pandas as pd

    from verse_etl.levels import VERSE_LEVELS
    from verse_etl.params import VolumeParams
    from verse_etl.stores.volumes import IMAGE_PATH, LABELS_PATH, StoreWriter

    shape = (512, 512, slices)
    affine = np.array([[-0.7, 0, 0, 179], [0, -0.7, 0, 179], [0, 0, 0.5, -350], [0, 0, 0, 1]])
    labels_top_down = list(range(1, 25))  # C1..L5
    pitch = (slices * 0.5 - 20) / len(labels_top_down)
    rows = []

    def vertebra_at(z: np.ndarray) -> np.ndarray:
        """Label at world height z (0 between vertebrae)."""
        top = -350 + slices * 0.5 - 10
        n = np.floor((top - z) / pitch).astype(int)
        inside = (n >= 0) & (n < len(labels_top_down)) & (((top - z) % pitch) < pitch * 0.8)
        return np.where(inside, np.array([0, *labels_top_down])[np.clip(n + 1, 0, 24)], 0)

    i = np.arange(shape[0])[:, None]
    j = np.arange(shape[1])[None, :]
    x, y = -0.7 * i + 179, -0.7 * j + 179
    disc = (x**2 + (y + 20) ** 2) < 20**2  # a round body, 40 mm across
    body = np.where(disc, 900, -1000).astype(np.int16)
    soft = np.where((x**2 / 150**2 + y**2 / 110**2) < 1, 40, -1000).astype(np.int16)

    def slabs(kind: str):
        for k0 in range(0, slices, 64):
            k = np.arange(k0, min(slices, k0 + 64))
            lab = vertebra_at(-350 + 0.5 * k)
            if kind == "hu":
                yield k0, np.where(lab[None, None, :] > 0, body[..., None], soft[..., None])
            else:
                yield k0, np.where(disc[..., None], lab[None, None, :], 0).astype(np.uint8)

    attrs = {"verse_etl": {"affine": affine.tolist()}}
    with StoreWriter(path, VolumeParams(verify=False), attrs, affine=affine) as writer:
        writer.write_array(IMAGE_PATH, shape, np.dtype(np.int16), slabs("hu"))
        writer.write_array(
            LABELS_PATH, shape, np.dtype(np.uint8), slabs("lab"), label_names=VERSE_LEVELS
        )
    top = -350 + slices * 0.5 - 10
    for n, label in enumerate(labels_top_down):
        z = top - (n + 0.4) * pitch
        rows.append(
            {"label": label, "level": VERSE_LEVELS[label], "in_mask": True, "in_centroids": True,
             "centroid_x_mm": 0.0, "centroid_y_mm": -20.0, "centroid_z_mm": z,
             "mask_label_at_centroid": label, "centroid_in_volume": True, "n_islands": 0}
        )  # fmt: skip
    return pd.DataFrame(rows), shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slab-mib", type=int, default=32, help="MiB of image + labels per read")
    parser.add_argument("--slices", type=int, default=1400, help="slices of 0.5 mm")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="verse-etl-qc-"))
    try:
        start = time.perf_counter()
        rows, shape = _write_store(work / "big.zarr", args.slices)
        t_write = time.perf_counter() - start
        rows.to_json(work / "rows.json")
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, str(work / "big.zarr"), str(work / "rows.json"),
             str(work / "big.png"), str(args.slab_mib)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        figures = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    voxels = shape[0] * shape[1] * shape[2]
    print(f"store: {shape} int16 level 0 = {voxels * 2 / 1e6:.0f} MB ({voxels * 4 / 1e6:.0f} MB "
          f"as float32), written in {t_write:.1f} s")  # fmt: skip
    print(
        f"QC picture {figures['size'][0]}x{figures['size'][1]} px from pyramid level "
        f"{figures['level']}, slab budget {args.slab_mib} MiB: {figures['seconds']:.1f} s, "
        f"peak RSS {figures['peak_rss_kib'] / 1024:.0f} MiB "
        f"(after imports {figures['rss_after_imports_kib'] / 1024:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
