"""What a MosMed study's rebuild costs after only its annotation file changed (the v1 -> v2 kind
of release: keypoints moved, DICOM files untouched), with this tree's code against an earlier
revision's (``--before``, default the commit before verse_etl/mosmed/store.py existed), in the
same run on the same study.

One real-size study (512 x 512 x ~400 thin series and its 5 mm decoy, as
``benchmarks/mosmed.py``) is built once by each code into its own build folder; then, in
interleaved rounds, the v2 annotation's first keypoint is moved (a new offset each round, so
every round is a real change) and each code rebuilds its study. Each build runs in a fresh child
process, timed around ``build_mosmed_study`` alone (imports excluded): CPU seconds of the
process (every thread), wall seconds, series stores written.

    python benchmarks/mosmed_rebuild.py [--before REV] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, sys, time
from pathlib import Path
import verse_etl
from verse_etl.mosmed.case import build_mosmed_study
from verse_etl.params import MosmedParams, VolumeParams
from verse_etl.sources.mosmed import discover_mosmed

root, out = Path(sys.argv[1]), Path(sys.argv[2])
(study,) = discover_mosmed(root)
cpu, wall = time.process_time(), time.perf_counter()
result = build_mosmed_study(study, root, out, VolumeParams(), MosmedParams())
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
assert not result.quarantine, result.quarantine
print(json.dumps({"cpu": cpu, "wall": wall, "stores_written": result.stores_written,
                  "converted": result.converted, "package": verse_etl.__file__}))
"""


def _package_at(rev: str, dest: Path) -> Path:
    """verse_etl as of ``rev``, laid out as a wheel installs it (schemas/ and flows/ inside)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "verse_etl", "schemas", "flows"],
        check=True,
        capture_output=True,
    ).stdout
    dest.mkdir(parents=True, exist_ok=True)
    tar = dest / "code.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")
    tar.unlink()
    for folder in ("schemas", "flows"):
        shutil.move(dest / folder, dest / "verse_etl" / folder)
    return dest


def _build(code: Path | None, root: Path, out: Path) -> dict:
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(root), str(out)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=code or ROOT,  # `-c` puts the current folder first on sys.path
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _move_keypoint(root: Path, offset: float, original: str) -> None:
    (path,) = (p for p in (root / "annotation_v2").glob("*.json"))
    data = json.loads(original)
    first_expert = next(iter(data["Annotation"].values()))
    first_expert[0]["segments"][0][0][0] += offset
    path.write_text(json.dumps(data, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="fd12f89^", help="the code to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    import numpy as np

    from verse_etl_sample.mosmed import write_mosmed_sample_study

    print("load average (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    work = Path(tempfile.mkdtemp(prefix="verse-etl-mosmed-rebuild-", dir=args.workdir))
    try:
        codes: dict[str, Path | None] = {
            f"before ({args.before})": _package_at(args.before, Path(work / "before")),
            "after (this tree)": None,
        }
        manifest, _ = write_mosmed_sample_study(
            work / "src", 0, size="real", rng=np.random.default_rng(0)
        )
        root = work / "src" / "mosmed"
        (v2,) = (root / "annotation_v2").glob("*.json")
        original = v2.read_text()
        print(
            f"study {manifest.folder}: thin series {manifest.rows}x{manifest.columns}x"
            f"{manifest.n_slices} and its decoy; {args.rounds} interleaved rounds"
        )
        for name, code in codes.items():
            first = _build(code, root, work / f"out-{name.split()[0]}")
            assert code is None or str(code) in first["package"], first["package"]
            print(
                f"  first build, {name}: {first['cpu']:.2f} CPU s, {first['wall']:.2f} s wall, "
                f"{first['stores_written']} stores written"
            )
        rebuilds: dict[str, list[dict]] = {name: [] for name in codes}
        for i in range(args.rounds):
            _move_keypoint(root, float(i + 1), original)
            for name, code in codes.items():
                r = _build(code, root, work / f"out-{name.split()[0]}")
                assert r["converted"], "the study was not rebuilt"
                rebuilds[name].append(r)
        v2.write_text(original)
        print("rebuild after the annotation file changed (best / median of the rounds):")
        for name, runs in rebuilds.items():
            cpu = [r["cpu"] for r in runs]
            wall = [r["wall"] for r in runs]
            written = sorted({r["stores_written"] for r in runs})
            print(
                f"  {name:24s}: CPU {min(cpu):6.2f} / {statistics.median(cpu):6.2f} s, wall "
                f"{min(wall):6.2f} / {statistics.median(wall):6.2f} s, stores written {written}"
            )
        (b, a) = ([statistics.median(r["cpu"] for r in runs)] for runs in rebuilds.values())
        print(f"  CPU ratio before/after (medians): {b[0] / a[0]:.1f}x")
        print("load average (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
