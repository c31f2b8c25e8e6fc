"""Where the CPU time of a CT conversion goes: each pass over the voxels alone, per MB.

Takes the 512x512x300 int16 CT of ``benchmarks/convert.py`` (generated there, or here if
missing) and measures, on one thread, the CPU milliseconds per MB of uncompressed voxels of
every pass the converter makes, each on the same data as in a real conversion (rows one chunk
deep, 64^3 chunks, params.yaml codec):

  decode          ISA-L gzip reader into a reused buffer (the limit) / into the staging rows
  gather          copying each chunk out of its row (Blosc needs it contiguous)
  encode          Blosc (params.yaml codec) of every chunk
  verify          decoding every frame again and comparing it with the chunk
  readback        writing the frames to a shard file and reading them back (page cache)
  digest          XXH3-128 of the rows
  histogram       HuHistogram.add_chunk on each gathered chunk (and the former per-row add)
  range           HuRange.add_chunk (MosMed: min and max only)
  pyramid         every second voxel of each row, then gather + encode + verify of those (1/8)

then the whole conversion (``ours + HU histogram`` of convert.py, all threads) against the sum
of its passes, and where the whole conversion's CPU goes, measured inside it (a child process
times the thread CPU spent in each stage of the real writer: decoding, the encoder tasks with
their histogram and verification, the in-order work, the shard files; what is left is thread
hand-offs, metadata and Python around them). Passes alone on one thread cost less than the
same passes in the conversion, where the decoder and two encoders share the cores and their
caches. Best of ``--repeat``.

    python benchmarks/cpu_profile.py [--work /tmp/verse-etl-convert] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/verse-etl-convert"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    import convert

    convert.VOLUMES = convert.VOLUMES[:1]
    args.work.mkdir(parents=True, exist_ok=True)
    convert.generate(args.work)
    source = args.work / f"{convert.VOLUMES[0][0]}.nii.gz"

    import numpy as np
    import xxhash
    from isal import isal_zlib

    from verse_etl.io.nifti import NiftiVoxelReader, read_nifti_info
    from verse_etl.params import load_params
    from verse_etl.stores.hu_histogram import HuHistogram, HuRange
    from verse_etl.stores.shards import staging_array
    from verse_etl.stores.volumes import _codec

    params = load_params(ROOT / "params.yaml").build.volumes
    info = read_nifti_info(source)
    blosc = _codec(params, 2).numcodecs()
    c = params.chunks[0]
    depth = params.chunks[2]
    rows = []
    with NiftiVoxelReader(info) as reader:
        for k0 in range(0, info.shape[2], depth):
            row = staging_array((*info.shape[:2], min(depth, info.shape[2] - k0)), info.dtype)
            reader.read_into(row)
            rows.append(row)
    mb = sum(r.nbytes for r in rows) / 1e6

    def blocks(row: np.ndarray) -> list[np.ndarray]:
        return [row[i : i + c, j : j + c] for i in range(0, row.shape[0], c) for j in range(0, row.shape[1], c)]  # fmt: skip

    gathered = [np.asfortranarray(b).ravel("F") for r in rows for b in blocks(r)]
    frames = [blosc.encode(g) for g in gathered]
    small = [np.asfortranarray(r[::2, ::2, ::2]) for r in rows]
    small_chunks = [np.asfortranarray(b).ravel("F") for r in small for b in blocks(r)]
    small_frames = [blosc.encode(g) for g in small_chunks]
    chunk = np.empty((c, c, depth), info.dtype, order="F")
    decoded = np.empty(chunk.size, info.dtype)
    buffer = bytearray(16 << 20)

    def limit() -> None:
        with open(source, "rb") as raw:
            stream = isal_zlib._GzipReader(raw, 1 << 20)
            while stream.readinto(buffer):
                pass

    def staging() -> None:
        with NiftiVoxelReader(info) as r:
            for row in rows:
                r.read_into(row)

    def gather() -> None:
        for r in rows:
            for b in blocks(r):
                chunk[: b.shape[0], : b.shape[1], : b.shape[2]] = b

    def verify(chunks: list[np.ndarray], encoded: list[bytes]) -> None:
        for g, f in zip(chunks, encoded, strict=True):
            out = decoded[: g.size]
            blosc.decode(f, out=out)
            if not np.array_equal(out.view(np.uint8), g.view(np.uint8)):
                raise AssertionError("round trip")

    def readback() -> None:
        with tempfile.TemporaryFile(dir=args.work) as f:
            for frame in frames:
                f.write(frame)
            f.flush()
            offset = 0
            for frame in frames:
                if os.pread(f.fileno(), len(frame), offset) != frame:
                    raise AssertionError("read back")
                offset += len(frame)

    def pyramid() -> None:
        for r in rows:
            np.asfortranarray(r[::2, ::2, ::2])
        for g in small_chunks:
            chunk.ravel("K")[: g.size] = g  # gather
            blosc.encode(g)
        verify(small_chunks, small_frames)

    def feed(add: Callable[[np.ndarray], None], arrays: list[np.ndarray]) -> None:
        for a in arrays:
            add(a)

    passes: dict[str, Callable[[], object]] = {
        "decode: limit (ISA-L, reused buffer)": limit,
        "decode: into the staging rows": staging,
        "gather chunks": gather,
        "encode (Blosc)": lambda: [blosc.encode(g) for g in gathered],
        "verify (decode + compare)": lambda: verify(gathered, frames),
        "shard write + read back": readback,
        "digest (XXH3-128)": lambda: [xxhash.xxh3_128(r.ravel("F")).digest() for r in rows],
        "HU histogram, per chunk": lambda: feed(HuHistogram().add_chunk, gathered),
        "HU histogram, per row (before)": lambda: feed(HuHistogram().add, rows),
        "HU range, per chunk": lambda: feed(HuRange().add_chunk, gathered),
        "pyramid (2 levels: copy, encode, verify)": pyramid,
    }
    costs = {}
    for name, run in passes.items():
        best = float("inf")
        for _ in range(args.repeat):
            start = time.thread_time()
            run()
            best = min(best, time.thread_time() - start)
        costs[name] = best / mb * 1000
    print(
        f"{source.name}: {mb:.0f} MB of voxels; CPU ms per MB on one thread, best of "
        f"{args.repeat}; load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    for name, ms in costs.items():
        print(f"  {name:44s} {ms:6.2f}")
    level0 = ["decode: into the staging rows", "gather chunks", "encode (Blosc)"]
    level0 += ["verify (decode + compare)", "shard write + read back", "digest (XXH3-128)"]
    passes_sum = sum(costs[k] for k in level0) + costs["HU histogram, per chunk"]
    passes_sum += costs["pyramid (2 levels: copy, encode, verify)"]
    data, _ = convert.measure("ours-hu", source, args.work / "profile-out")
    whole = data["work_cpu"] / mb * 1000
    limit_ms = costs["decode: limit (ISA-L, reused buffer)"]
    print(
        f"  sum of the passes of ours + HU histogram   {passes_sum:6.2f} "
        f"({passes_sum / limit_ms:.2f} x the limit)\n"
        f"  the whole conversion, all threads          {whole:6.2f} "
        f"({whole / limit_ms:.2f} x the limit)"
    )
    stages = min((measure_stages(source, args.work) for _ in range(args.repeat)), key=sum_cpu)
    total = stages.pop("process")
    print(
        f"where the whole conversion's CPU goes, measured in it (best of {args.repeat}; "
        f"load average {', '.join(f'{v:.2f}' for v in os.getloadavg())})"
    )
    for name, seconds in stages.items():
        print(f"  {name:60s} {seconds / mb * 1000:6.2f}")
    rest = total - sum(v for k, v in stages.items() if not k.startswith(" "))
    print(
        f"  {'the rest: hand-offs, metadata, Python around the stages':60s} {rest / mb * 1000:6.2f}"
    )
    print(
        f"  {'the whole conversion, all threads':60s} {total / mb * 1000:6.2f} "
        f"({total / mb * 1000 / limit_ms:.2f} x the limit)"
    )


STAGES = (
    ("verse_etl.io.nifti", "NiftiVoxelReader", "read_into", "decode into the staging rows"),
    ("verse_etl.stores.shards", "ShardWriter", "_encode_strip", "encoder tasks, all levels"),
    ("verse_etl.stores.hu_histogram", "HuHistogram", "add_chunk", " - of which HU histogram"),
    ("verse_etl.stores.shards", "ShardWriter", "_check_frame", " - of which verify (decode + compare)"),
    ("verse_etl.stores.shards", "ShardWriter", "_in_order", "in-order: digest, pyramid copies"),
    ("verse_etl.stores.shards", "ShardWriter", "_write_shard", "shard files: write + read back"),
)  # fmt: skip
"""(module, class, method, label): the thread CPU inside each is a stage; labels starting
with a space are parts of the stage above them."""


def sum_cpu(stages: dict[str, float]) -> float:
    return stages["process"]


def measure_stages(source: Path, work: Path) -> dict[str, float]:
    """Stage CPU seconds of one conversion (``ours + HU histogram``) in a fresh process."""
    sys.path.insert(0, str(Path(__file__).parent))
    import convert

    out = work / "stages-out"
    shutil.rmtree(out, ignore_errors=True)
    convert.wait_for_idle()
    proc = subprocess.run(
        [sys.executable, __file__, "--stages", str(source), str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def stages_main(source: Path, out: Path) -> None:
    """Child: convert ``source`` as convert.py's ours-hu, timing the thread CPU of each stage."""
    import importlib

    sys.path.insert(0, str(Path(__file__).parent))
    import convert

    for module in convert.PRELOAD["ours-hu"]:
        importlib.import_module(module)
    spent: Counter[str] = Counter()
    lock = threading.Lock()
    local = threading.local()

    def timed(method: Callable, label: str) -> Callable:
        def wrapper(*args: object, **kwargs: object) -> object:
            active = local.__dict__.setdefault("active", set())
            if label in active:  # nested (a pyramid level fed inline): counted once, outside
                return method(*args, **kwargs)
            active.add(label)
            start = time.thread_time()
            try:
                return method(*args, **kwargs)
            finally:
                active.discard(label)
                with lock:
                    spent[label] += time.thread_time() - start

        return wrapper

    for module, cls, name, label in STAGES:
        owner = getattr(importlib.import_module(module), cls)
        setattr(owner, name, timed(getattr(owner, name), label))
    before = resource.getrusage(resource.RUSAGE_SELF)
    convert.run_ours(source, out, histogram=True)
    after = resource.getrusage(resource.RUSAGE_SELF)
    process = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(json.dumps({label: spent[label] for *_, label in STAGES} | {"process": process}))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--stages":
        stages_main(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
