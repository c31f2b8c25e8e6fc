"""Seconds per QC picture, before and after a change of ``verse_etl/report/qc.py``, and the
report's pictures drawn one at a time against several at a time, on a build already made.

    verse-etl sample --size real --verse-cases 4 --mosmed-studies 1 --out /tmp/report/src
    verse-etl build --verse /tmp/report/src/verse --mosmed /tmp/report/src/mosmed \\
        --out /tmp/report/build
    python benchmarks/report_pictures.py /tmp/report/build --before REVISION [--rounds 5]

Before and after run in this one process, interleaved round by round (the machine is shared:
its load moves both alike); "before" is ``qc.py`` as of git revision ``--before`` loaded as a
module of its own. CPU seconds are the whole process's (every thread). Both versions' PNGs and
JSON sidecars are compared byte for byte. Then ``write_pictures`` (every picture drawn: keys
removed) with 1 worker and with the default, interleaved; and each in a fresh child process for
its own peak memory (``VmHWM`` of ``/proc/self/status``, read by the child at its end).

Pictures read their stores' boxes in their own threads (:mod:`verse_etl.stores.boxes`: Blosc
decoding and the copies release the GIL). Through zarr they gained little side by side on 2
cores: zarr copied every decoded chunk into its output array on its one event-loop thread
(``zarr_io``), which all pictures shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from revision import module_at

from verse_etl.report import page, qc

ROOT = Path(__file__).resolve().parent.parent


def _jobs(out: Path, tables: dict) -> list[tuple[str, object]]:
    """(name, draw(module, png)) for each picture of the build, as ``write_pictures`` draws it."""
    jobs = []
    scans, vertebrae = tables["scans"], tables["vertebrae"]
    for row in scans.itertuples():
        rows = vertebrae[vertebrae["scan_id"] == row.scan_id]
        affine = np.asarray(row.affine, dtype=float).reshape(4, 4)
        store = out / row.store_path

        def draw(m, png, store=store, rows=rows, affine=affine, title=row.scan_id):
            return m.verse_picture(store, rows, png, title, index_affine=affine)

        jobs.append((f"verse {row.scan_id}", draw))
    series, keypoints = tables.get("series"), tables.get("mosmed_vertebrae")
    if series is not None and keypoints is not None:
        for row in series[series["annotated"] & series["store_path"].notna()].itertuples():
            rows = keypoints[keypoints["series_uid"] == row.series_uid]
            store = out / row.store_path

            def draw(m, png, store=store, rows=rows, title=row.folder):
                return m.mosmed_picture(store, rows, png, title=title)

            jobs.append((f"mosmed {row.folder}", draw))
    return jobs


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _fmt(values: list[float]) -> str:
    return f"{min(values):.3f} / {statistics.median(values):.3f}"


def _redraw_all(out: Path, workers: int) -> None:
    for key in (out / "report" / "qc").glob("*.key"):
        key.unlink()
    page.write_pictures(out, page._tables(out), workers=workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a build folder (verse-etl build --out)")
    parser.add_argument(
        "--before", required=True, help="git revision of qc.py to compare (e.g. 519c98a)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child-workers", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_workers is not None:  # a fresh process: its own peak memory
        seconds, cpu = _timed(lambda: _redraw_all(args.out, args.child_workers))
        status = Path("/proc/self/status").read_text().splitlines()
        hwm = next(x for x in status if x.startswith("VmHWM:")).split()[1]
        print(f"{seconds:.2f} {cpu:.2f} {int(hwm) / 1024:.0f}")
        return

    print("load:", os.getloadavg(), "cores:", len(os.sched_getaffinity(0)))
    before = module_at(args.before, "verse_etl/report/qc.py", "qc_before")
    jobs = _jobs(args.out, page._tables(args.out))
    work = Path(tempfile.mkdtemp(prefix="qc-bench-"))
    for label in ("before", "after"):
        (work / label).mkdir()
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for name, draw in jobs:
            for label, module in (("before", before), ("after", qc)):
                png = work / label / f"{name.replace(' ', '-')}.png"
                times.setdefault((name, label), []).append(
                    _timed(lambda d=draw, m=module, p=png: d(m, p))
                )
    print(f"seconds per picture, best / median of {args.rounds} interleaved rounds "
          f"(before = qc.py at {args.before}):")  # fmt: skip
    print(f"{'picture':24} {'wall before':>15} {'wall after':>15} {'CPU before':>15} "
          f"{'CPU after':>15}  same PNG+JSON")  # fmt: skip
    totals = {"before": [0.0, 0.0], "after": [0.0, 0.0]}
    for name, _ in jobs:
        b, a = times[(name, "before")], times[(name, "after")]
        for label, t in (("before", b), ("after", a)):
            totals[label][0] += statistics.median(w for w, _ in t)
            totals[label][1] += statistics.median(c for _, c in t)
        stem = name.replace(" ", "-")
        same = all(
            (work / "before" / f"{stem}{ext}").read_bytes()
            == (work / "after" / f"{stem}{ext}").read_bytes()
            for ext in (".png", ".json")
        )
        print(f"{name:24} {_fmt([w for w, _ in b]):>15} {_fmt([w for w, _ in a]):>15} "
              f"{_fmt([c for _, c in b]):>15} {_fmt([c for _, c in a]):>15}  {same}")  # fmt: skip
    print(f"{'sum of medians':24} {totals['before'][0]:>15.3f} {totals['after'][0]:>15.3f} "
          f"{totals['before'][1]:>15.3f} {totals['after'][1]:>15.3f}")  # fmt: skip

    workers = page.picture_workers()
    print(f"write_pictures, every picture drawn, 1 worker against {workers} "
          f"(best / median wall s of {args.rounds} interleaved rounds):")  # fmt: skip
    walls: dict[int, list[float]] = {1: [], workers: []}
    for _ in range(args.rounds):
        for n in walls:
            walls[n].append(_timed(lambda n=n: _redraw_all(args.out, n))[0])
    for n, w in walls.items():
        print(f"  {n} worker(s): {_fmt(w)} s")
    for n in walls:
        child = subprocess.run(
            [sys.executable, __file__, str(args.out), "--before", args.before, "--child-workers", str(n)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        seconds, cpu, peak = child.stdout.split()
        print(f"  fresh process, {n} worker(s): {seconds} s wall, {cpu} CPU s, "
              f"peak RSS {peak} MiB (its own VmHWM, imports included)")  # fmt: skip
    print("load:", os.getloadavg())


if __name__ == "__main__":
    main()
