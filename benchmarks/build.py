"""Whole-build throughput on real-size data: the build against the converter alone, and rebuilds.

Generates (once, kept in ``--work``) a real-size sample with ``verse-etl sample --size real``:
``--verse-cases`` VerSe scans (CT and vertebra mask, 512 x 512 x 200-500 and float64 or uint8
masks as in the releases) and ``--mosmed-studies`` MosMed studies (a thin series and its 5 mm
decoy each). Then, for each worker count of ``--workers`` (threads, as ``verse-etl build``
runs) and on the Dask runner, it prints in one run:

- MB/s of uncompressed source voxels (CT and MosMed int16, masks in their stored dtype) for the
  whole build: ``verse-etl build`` (cases, tables and the report, which the build flow draws),
  a fresh process as a user runs it;
- the ceiling: the same volumes converted by the converter alone (readers -> StoreWriter with
  the pyramid, digest and verification, no statistics, no rows), in one process with as many
  threads as workers (imports excluded);
- the overhead of the build over that ceiling, split into discovery + hashing (sha256 of every
  source file), per-case rows and checks (what the cases do beyond hashing and the conversion
  alone: HU histogram, label statistics, centroids, DICOM headers and geometry, rows, results
  saved), tables, report, process start + imports + exit, and orchestration. The split
  comes from the same build made with plain library calls and timers (hashing and the case
  phase, tables, report) in a fresh child process that first imports what ``verse-etl build``
  imports, the way it imports them (the CLI and its stamp check, then Prefect's engines and
  the build flow's modules with the garbage collector paused and frozen after), so that it
  starts cold as the CLI does: its import time (from its launch by this script) and
  its exit (the interpreter's teardown, after its last phase) are their own line, and
  orchestration is the CLI build's wall time beyond that child's (the Prefect server, flow and
  task runs, artifacts and logs sent to the API, the no-change check; the import of Prefect is
  in the imports line). Its parts are measured in another run than the CLI total, so
  orchestration carries the noise of shared cores; the child's GC pauses are printed too;
- the peak memory of the whole process tree (every process the CLI starts, Prefect server and
  Dask workers included; see ``benchmarks/peak_memory.py``);
- with the worker count ``--rebuild-workers``: the rerun with nothing changed (source files
  whose stat is unchanged are not hashed again), the same with ``--rehash`` (every file
  hashed), and the rebuild after one scan's centroid file changed (its sha256, hence its case,
  changes), each against the full build.

Last, the projection: the full public release (VerSe'19 + VerSe'20 and MosMed, at the sizes
``../shared/specs`` give) on this machine and on N Dask workers, scaled from this run's fixed
seconds per build, its wall and CPU seconds per MB, the ratio of voxels to .nii.gz in the
sample and (with Dask) what a worker's start costs, the assumptions printed with it; and the
one-case rebuild of that release, from the rebuild measured here plus how a rebuild grows per
further case (measured on two tiny samples: one of this sample's case count, one of
``--scale-verse-cases`` + ``--scale-mosmed-studies``).

The local Prefect server is started and waited for before anything is measured, so that every
CLI build finds it up (as after ``make run``, which starts it while the sample is written).

Every figure is printed with the load average: other jobs share these cores, so wall-clock
figures are disturbed; ``--runs`` > 1 keeps the best of several runs.

    python benchmarks/build.py [--work /tmp/verse-etl-build] [--verse-cases 12]
        [--mosmed-studies 4] [--workers 1 2] [--no-dask] [--scale-verse-cases 100]
        [--scale-mosmed-studies 12] [--clean]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from peak_memory import TreeSampler

# The line each flow-running command logs at its end (flows/timing.py).
COST = re.compile(
    r"verse-etl prefect cost: .+?: (?P<prefect>[\d.]+) s of [\d.]+ s \(\d+%; (?P<parts>[^)]*)\)"
)

ROOT = Path(__file__).resolve().parents[1]
MB = 1e6
TARGETS = {"overhead": 0.20, "rebuild": 0.05, "rerun": 0.02}


def load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def cli(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def environment(work: Path) -> dict[str, str]:
    """The CLI's environment: Prefect's home in the work folder, no analytics (as the Makefile)."""
    return {
        **os.environ,
        "PREFECT_HOME": str(work / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "DVC_NO_ANALYTICS": "1",
    }


# -- the sample ---------------------------------------------------------------------------------


def generate(src: Path, size: str, verse_cases: int, mosmed_studies: int) -> None:
    """Write a sample into ``src`` with ``verse-etl sample``, unless one is there (kept between
    runs: generating the real-size sample takes minutes)."""
    if (src / "verse").is_dir() and (src / "mosmed").is_dir():
        return
    start = time.perf_counter()
    subprocess.run(
        [cli("verse-etl"), "sample", "--out", str(src), "--size", size,
         "--verse-cases", str(verse_cases), "--mosmed-studies", str(mosmed_studies),
         "--overwrite"],
        check=True, stdout=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    print(f"generated the sample in {time.perf_counter() - start:.0f} s (not part of any figure)")


def start_server(env: dict[str, str]) -> float:
    """Start the local Prefect server of the benchmark's Prefect home and wait until it answers
    (``make run`` starts it ahead of the build the same way), before anything is measured: else
    the first CLI build alone waits for a cold start (seconds of CPU for the server's imports,
    on cores the build needs) and the worker counts are not compared alike. A cold start is
    ``benchmarks/prefect_share.py``'s figure. Returns the seconds it took (with the import of
    Prefect by the child that waits: about 2 s when the server was up already)."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "from verse_etl.flows.server import prefect_api\n"
         "with prefect_api():\n    pass"],
        check=True, cwd=ROOT, env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - start


# -- the converter alone ------------------------------------------------------------------------


@dataclasses.dataclass
class SampleSize:
    """What the sample holds, for the figures per MB and the projection: MB of uncompressed
    source voxels per source, MB of the VerSe .nii.gz files they come from, and the cases."""

    verse_mb: float = 0.0
    verse_gz_mb: float = 0.0  # the CT and mask files, as they are downloaded
    mosmed_mb: float = 0.0
    verse_scans: int = 0
    mosmed_studies: int = 0

    @property
    def mb(self) -> float:
        return self.verse_mb + self.mosmed_mb

    @property
    def cases(self) -> int:
        return self.verse_scans + self.mosmed_studies


def volume_jobs(src: Path, params: object) -> tuple[list[Callable[[Path], None]], SampleSize]:
    """One conversion per volume the build converts (CT, mask, each clean DICOM series), as the
    converter alone runs it, and what the sample holds (:class:`SampleSize`)."""
    import numpy as np

    from verse_etl.geometry.series import check_series
    from verse_etl.geometry.store_frame import store_frame
    from verse_etl.io.dicom import SeriesReader, scan_files
    from verse_etl.io.nifti import NiftiVoxelReader, iter_nifti_slabs, read_nifti_info
    from verse_etl.sources.mosmed import discover_mosmed
    from verse_etl.sources.verse import discover_verse_sources
    from verse_etl.stores.volumes import IMAGE_PATH, LABELS_PATH, StoreWriter, as_labels, slab_depth

    volumes = params.volumes  # type: ignore[attr-defined]
    jobs: list[Callable[[Path], None]] = []
    size = SampleSize()

    for scan in discover_verse_sources(src / "verse").scans:
        ct = read_nifti_info(scan.ct)
        mask = read_nifti_info(scan.mask) if scan.mask else None
        size.verse_scans += 1
        size.verse_mb += np.prod(ct.shape) * ct.dtype.itemsize / MB
        size.verse_mb += np.prod(mask.shape) * mask.dtype.itemsize / MB if mask else 0
        size.verse_gz_mb += sum(f.path.stat().st_size for f in (scan.ct, scan.mask) if f) / MB

        def verse(out: Path, ct=ct, mask=mask, name=scan.scan_id) -> None:
            frame = store_frame(ct.affine, ct.shape)  # as the case builders turn stores
            with StoreWriter(
                out / f"{name}.zarr", volumes, {}, affine=ct.affine, frame=frame
            ) as writer:
                reader = NiftiVoxelReader(ct)
                writer.write_reader(IMAGE_PATH, ct.shape, reader)
                if mask is not None:
                    slabs = iter_nifti_slabs(mask, slab_depth(mask.shape, mask.dtype))
                    labels = as_labels(slabs, mask.path)
                    writer.write_array(LABELS_PATH, mask.shape, np.dtype(np.uint8), labels)

        jobs.append(verse)

    mosmed = params.mosmed  # type: ignore[attr-defined]
    for study in discover_mosmed(src / "mosmed", mosmed.annotation_dirs):
        size.mosmed_studies += 1
        files = sorted(p for p in study.dicom_dir.rglob("*") if p.is_file())
        for uid, headers in scan_files(files).series.items():
            geometry = check_series(headers)
            if not geometry.is_volume:
                continue
            size.mosmed_mb += np.prod(geometry.shape) * 2 / MB

            def series(out: Path, geometry=geometry, name=f"{study.folder}-{uid}") -> None:
                frame = store_frame(geometry.affine, geometry.shape)
                with StoreWriter(
                    out / f"{name}.zarr", volumes, {}, affine=geometry.affine, frame=frame
                ) as w:
                    reader = SeriesReader(geometry.slices)
                    w.write_reader(IMAGE_PATH, geometry.shape, reader)

            jobs.append(series)
    return jobs, size


def run_ceiling(jobs: list[Callable[[Path], None]], out: Path, workers: int) -> tuple[float, float]:
    """Wall and CPU seconds (this process, all threads) to run every conversion on ``workers``
    threads."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda job: job(out), jobs))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    shutil.rmtree(out, ignore_errors=True)
    return seconds, cpu


# -- the build with plain library calls and timers ----------------------------------------------


@contextmanager
def timed_hashing(seconds: Counter) -> Iterator[None]:
    """Add the wall time of every source-file digest (both sources, stat reuse included) to
    ``seconds['hashing']``."""
    from verse_etl.cases.stat_cache import DigestCache

    lock = threading.Lock()
    saved = DigestCache.sha256

    def timed(self: DigestCache, file: object) -> str:
        start = time.perf_counter()
        try:
            return saved(self, file)  # type: ignore[arg-type]
        finally:
            with lock:
                seconds["hashing"] += time.perf_counter() - start

    DigestCache.sha256 = timed  # type: ignore[method-assign]
    try:
        yield
    finally:
        DigestCache.sha256 = saved  # type: ignore[method-assign]


def library_build(params: object, workers: int) -> dict[str, float]:
    """The build of ``verse-etl build`` made with plain calls: discovery, the cases on
    ``workers`` threads, what each source adds, the tables; wall seconds of each phase."""
    from verse_etl.flows.build import tables

    from verse_etl.cases.outputs import save_case_result
    from verse_etl.mosmed.case import build_mosmed_study
    from verse_etl.mosmed.case import source_results as mosmed_results
    from verse_etl.report.page import write_report
    from verse_etl.sources.mosmed import discover_mosmed
    from verse_etl.sources.verse import discover_verse_sources
    from verse_etl.verse.case import build_verse_scan, source_results

    p = params
    out, verse_root, mosmed_root = Path(p.out), Path(p.sources.verse), Path(p.sources.mosmed)  # type: ignore[attr-defined]
    shutil.rmtree(out, ignore_errors=True)
    seconds: Counter = Counter()
    start = time.perf_counter()
    found = discover_verse_sources(verse_root)
    studies = discover_mosmed(mosmed_root, p.mosmed.annotation_dirs)  # type: ignore[attr-defined]
    seconds["discovery"] = time.perf_counter() - start
    cases: list[Callable[[], object]] = [
        (lambda s=s: build_verse_scan(s, verse_root, out, p.volumes, p.checks))  # type: ignore[attr-defined]
        for s in found.scans
    ] + [
        (lambda s=s: build_mosmed_study(s, mosmed_root, out, p.volumes, p.mosmed))  # type: ignore[attr-defined]
        for s in studies
    ]
    with timed_hashing(seconds):
        start = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda case: case(), cases))
        seconds["cases"] = time.perf_counter() - start
    start = time.perf_counter()
    scans = results[: len(found.scans)]
    derived = source_results(found, verse_root, scans, out) + mosmed_results(
        mosmed_root,
        p.mosmed.annotation_dirs,  # type: ignore[attr-defined]
    )
    for result in derived:
        save_case_result(out, result)
    seconds["sources"] = time.perf_counter() - start
    start = time.perf_counter()
    tables(p)  # type: ignore[arg-type]
    seconds["tables"] = time.perf_counter() - start
    start = time.perf_counter()
    write_report(out)
    seconds["report"] = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    return dict(seconds)


# What `verse-etl build` imports before its first case, and how (verse_etl/cli.py): the command
# line and the stamp check (on a new output folder nothing more), then, with the cyclic garbage
# collector paused and what they made frozen (verse_etl/importing.py), Prefect's engines and
# the build flow, and through it the whole library.
CLI_IMPORTS = ("verse_etl.cli", "verse_etl.publish.stamp")
CLI_FLOW_IMPORTS = (
    "verse_etl.flows",
    "prefect.artifacts",
    "prefect.flows",
    "prefect.futures",
    "prefect.task_engine",
    "prefect.task_runners",
    "verse_etl.flows.build",
)


class GcPauses:
    """Seconds the cyclic garbage collector held the interpreter, per generation (every thread:
    a collection stops them all), from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.counts = [0, 0, 0]
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        # CPython runs one collection at a time (a flag guards it), so one start suffices.
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._start
            self.counts[info["generation"]] += 1


def library_child(work: Path, workers: int, launched: float) -> None:
    """In a fresh process (``--library-child``): import what the CLI build imports, make the
    library build, and print one JSON line: its phases, the seconds from ``launched`` (the
    parent's clock just before it started this process) to the end of the imports and to the
    end of the build, and its GC pauses."""
    import importlib

    pauses = GcPauses()
    gc.callbacks.append(pauses)
    for name in CLI_IMPORTS:
        importlib.import_module(name)
    from verse_etl.importing import imports_without_collector

    with imports_without_collector():
        for name in CLI_FLOW_IMPORTS:
            importlib.import_module(name)
    # Not the kernel's start time (psutil's create_time): it counts from the boot time, which
    # /proc gives in whole seconds.
    imported = time.time() - launched
    params = build_params(work / "src", workers, work / "lib")
    phases = library_build(params, workers)
    done = time.time() - launched
    gc.callbacks.remove(pauses)
    print(
        json.dumps(
            {
                **phases,
                "imports": imported,
                "since_start": done,
                "gc": sum(pauses.seconds),
                "gc_gen2": pauses.seconds[2],
                "gc_collections": sum(pauses.counts),
            }
        ),
        flush=True,
    )


def run_library_child(work: Path, workers: int, env: dict[str, str]) -> dict[str, float]:
    """:func:`library_child` in a child process: its figures, its wall time from the launch to
    its exit (``wall``), its CPU seconds (``cpu``, every thread) and its exit (``exit``: the
    wall time after its last phase ended, i.e. the interpreter's teardown)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start, launched = time.perf_counter(), time.time()
    command = [
        sys.executable, __file__, "--work", str(work), "--library-child", str(workers),
        "--launched", repr(launched),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"library build child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {**figures, "wall": wall, "cpu": cpu, "exit": max(0.0, wall - figures["since_start"])}


# -- the CLI ------------------------------------------------------------------------------------


def run_cli(command: list[str], env: dict[str, str]) -> tuple[float, float, TreeSampler, str]:
    """Run a CLI command to the end; its wall seconds, the CPU seconds of its whole process tree
    (every descendant is waited for by its parent, so the children's usage holds them all), the
    memory of the tree and its standard error."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    with TreeSampler(proc.pid) as tree:
        _, err = proc.communicate()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{err[-3000:]}")
    return seconds, cpu, tree, err


def prefect_cost(err: str) -> dict[str, float]:
    """Prefect's seconds on the build's critical path, by part, from the line the flow logs at
    its end (``flows/timing.py``: import, server wait, flow run, task runs, flush); empty for a
    command that ran no flow (a build with nothing to change)."""
    match = COST.search(err)
    if match is None:
        return {}
    parts = {"total": float(match["prefect"])}
    for part in match["parts"].split(", "):
        name, _, seconds = part.rpartition(" ")
        parts[name] = float(seconds)
    return parts


def cli_build(
    src: Path, out: Path, workers: int, runner: str, env: dict[str, str], rehash: bool = False
) -> dict[str, float]:
    """``verse-etl build`` on ``out`` (cases, tables and the report: the build flow draws the
    report itself, so it is not run again): seconds, CPU and tree peaks."""
    build = [
        cli("verse-etl"), "build", "--params", str(ROOT / "params.yaml"),
        "--verse", str(src / "verse"), "--mosmed", str(src / "mosmed"), "--out", str(out),
        "--workers", str(workers), "--runner", runner, *(["--rehash"] if rehash else []),
    ]  # fmt: skip
    t_build, cpu_build, tree_build, err = run_cli(build, env)
    return {
        **{f"prefect {k}": v for k, v in prefect_cost(err).items()},
        "build": t_build,
        "cpu": cpu_build,
        "pss": tree_build.peak_pss_mb,
        "hwm_sum": tree_build.peak_hwm_sum_mb,
        "processes": tree_build.processes,
    }


def print_overhead(
    lib: dict[str, float], full: dict[str, float], ceiling: float, workers: int
) -> None:
    """The build's overhead over the ceiling by phase, from the library build child's timings,
    and Prefect's part of the orchestration from the CLI build's cost line."""
    hashing = lib.get("hashing", 0.0) / workers  # summed over the worker threads
    process = lib["imports"] + lib["exit"]
    parts = {
        "discovery + hashing": lib["discovery"] + hashing,
        "per-case rows and checks": lib["cases"] - hashing - ceiling + lib["sources"],
        "tables": lib["tables"],
        "report": lib["report"],
        "process start + imports + exit": process,
        "orchestration (CLI build - library build)": full["build"] - lib["wall"],
    }
    for name, value in parts.items():
        print(f"    {name:44s} {value:6.1f} s  {value / ceiling:5.0%} of the ceiling")
        if name.startswith("process"):
            print(
                f"      start + imports {lib['imports']:.1f} s (Prefect's import "
                f"{full.get('prefect import', 0.0):.1f} s of them, by the CLI's cost line), exit "
                f"{lib['exit']:.1f} s (the interpreter's teardown: its last garbage collection)"
            )
        if name.startswith("orchestration") and "prefect total" in full:
            rest = {
                k.removeprefix("prefect "): v
                for k, v in full.items()
                if k.startswith("prefect ") and k not in ("prefect total", "prefect import")
            }
            detail = ", ".join(f"{k} {v:.1f}" for k, v in rest.items())
            print(
                f"      of which Prefect beyond its import {sum(rest.values()):.1f} s ({detail}; "
                f"its cost line); the rest: the no-change check, artifacts and logs sent to the "
                f"API, progress, pruning, and the noise of shared cores"
            )
            # CPU seconds hardly move with the load of other jobs, wall seconds do.
            print(
                f"      CPU: CLI build {full['cpu']:.1f} s (its process and the children it "
                f"waits for; the Prefect server apart), library build child {lib['cpu']:.1f} s: "
                f"{full['cpu'] - lib['cpu']:+.1f} CPU s"
            )
    print(
        f"    (library build child: imports {lib['imports']:.1f} s, discovery "
        f"{lib['discovery']:.1f} s, cases {lib['cases']:.1f} s of which sha256 {hashing:.1f} s "
        f"per worker, tables {lib['tables']:.1f} s, report {lib['report']:.1f} s, exit "
        f"{lib['exit']:.1f} s; GC pauses {lib['gc']:.2f} s in {lib['gc_collections']:.0f} "
        f"collections, {lib['gc_gen2']:.2f} s of them full ones)"
    )


def build_params(src: Path, workers: int, out: Path) -> object:
    """The build parameters of ``params.yaml`` on the sample in ``src``."""
    from verse_etl.params import load_params

    base = load_params(ROOT / "params.yaml").build
    sources = dataclasses.replace(
        base.sources, verse=str(src / "verse"), mosmed=str(src / "mosmed")
    )
    return dataclasses.replace(base, sources=sources, workers=workers, out=str(out))


# -- the projection ---------------------------------------------------------------------------

# The public release, as ../shared/specs describe it (VERSE.md section 1, MOSMED.md): the sizes
# the projection scales this run's figures to. VerSe is given as downloaded (.nii.gz), turned
# into voxels with the ratio of the sample's own files.
VERSE_RELEASE_SCANS = 374  # VerSe'19 + VerSe'20 (the issue; 355 patients)
VERSE_GZ_MB_PER_SCAN = 6600 / 80  # VerSe'19 training: ~6.6 GB for 80 scans (5 files each)
MOSMED_RAW_MB = 187_000  # CTLungCa-500 raw: 187 GB of DICOM, uncompressed int16 pixels
MOSMED_STUDIES = 500  # 979 series across ~500 studies
MOSMED_ANNOTATED = 100  # the studies with vertebral-fracture keypoints (Pisov et al.)
DASK_EFFICIENCY = 0.9  # assumed: one core per Dask worker, 90% of it on cases
DASK_EXAMPLES = (10, 50)


@dataclasses.dataclass
class Measured:
    """One configuration's figures in this run, as the projection uses them."""

    workers: int
    full: dict[str, float]  # cli_build of a fresh build
    lib: dict[str, float]  # run_library_child (threads only)
    rebuild: float | None = None  # one-case rebuild at this sample's size, seconds


def fixed_seconds(m: Measured) -> float:
    """What a build costs whatever its size, from this run: the process start, imports and
    exit (the library child's) and Prefect beyond its import (the CLI's cost line)."""
    prefect = m.full.get("prefect total", 0.0) - m.full.get("prefect import", 0.0)
    return m.lib["imports"] + m.lib["exit"] + prefect


def rebuild_growth(
    work: Path, env: dict[str, str], samples: list[tuple[int, int]], workers: int, runs: int = 1
) -> list[tuple[int, float]]:
    """The one-case rebuild's seconds on tiny samples of different sizes (``(VerSe scans, MosMed
    studies)`` each): how a rebuild grows with the unchanged cases around it (their reuse
    checks, their rows in the tables, their pictures' keys), apart from what the changed case
    costs. (cases, seconds: the best of ``runs`` rebuilds after one build) per sample."""
    points = []
    for scans, studies in samples:
        src = work / f"scale-{scans}-{studies}"
        generate(src, "tiny", scans, studies)
        out = work / f"scale-out-{scans}-{studies}"
        shutil.rmtree(out, ignore_errors=True)
        cli_build(src, out, workers, "threads", env)
        seconds = min(
            one_case_rebuild(src, out, workers, env, newlines=run)[1]["build"]
            for run in range(1, max(1, runs) + 1)
        )
        shutil.rmtree(out, ignore_errors=True)
        points.append((scans + studies, seconds))
        print(
            f"  one-case rebuild, tiny sample of {scans} + {studies} cases: {seconds:.1f} s "
            f"(best of {max(1, runs)})  (load {load()})"
        )
    return points


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def print_projection(
    size: SampleSize,
    threads: Measured,
    dask: Measured | None,
    slope: float | None,
) -> None:
    """The full public release on this machine and on N Dask workers, scaled from this run."""
    mb, full = size.mb, threads.full
    fixed = fixed_seconds(threads)
    pace = (full["build"] - fixed) / mb  # wall seconds per MB beyond the fixed seconds
    cpu = (full["cpu"] - fixed) / mb  # CPU seconds per MB: the fixed part is one thread's
    voxels_per_gz = size.verse_mb / size.verse_gz_mb if size.verse_gz_mb else float("nan")
    verse = VERSE_RELEASE_SCANS * VERSE_GZ_MB_PER_SCAN * voxels_per_gz
    annotated = MOSMED_RAW_MB * MOSMED_ANNOTATED / MOSMED_STUDIES
    start = None
    if dask is not None:  # each worker imports the library and Prefect, and runs its tasks
        start = max(0.0, dask.full["cpu"] - threads.full["cpu"]) / dask.workers
    print(
        f"\nprojection: the full public release, scaled from this run's {threads.workers}-worker "
        f"threads build\n"
        f"  measured: fixed {fixed:.1f} s a build (process start, imports, exit, Prefect beyond "
        f"its import), then {pace * 1000:.2f} s wall and {cpu * 1000:.2f} CPU s per GB of voxels "
        f"({1 / pace:.0f} MB/s on this machine); the sample's VerSe files hold "
        f"{voxels_per_gz:.2f} MB of voxels per MB of .nii.gz"
        + (f"; a Dask worker adds {start:.1f} CPU s (its start)" if start is not None else "")
    )
    print(
        f"  assumed: VerSe {VERSE_RELEASE_SCANS} scans of {VERSE_GZ_MB_PER_SCAN:.0f} MB of "
        f".nii.gz each (VerSe'19 training, specs/VERSE.md), MosMed {MOSMED_RAW_MB / 1000:.0f} GB "
        f"of int16 DICOM in ~{MOSMED_STUDIES} studies (specs/MOSMED.md), {MOSMED_ANNOTATED} of "
        f"them annotated; the sample's mixed CPU per MB for both sources (MosMed from DICOM "
        f"costs more per MB than VerSe); Dask workers at {DASK_EFFICIENCY:.0%} of a core each; "
        f"an idle machine and storage that keeps up"
    )
    parts = [
        (f"VerSe, {VERSE_RELEASE_SCANS} scans", verse, VERSE_RELEASE_SCANS),
        (f"MosMed, {MOSMED_ANNOTATED} annotated studies", annotated, MOSMED_ANNOTATED),
        (f"MosMed, all ~{MOSMED_STUDIES} studies", MOSMED_RAW_MB, MOSMED_STUDIES),
        ("full release (VerSe + all MosMed)", verse + MOSMED_RAW_MB, VERSE_RELEASE_SCANS + MOSMED_STUDIES),
    ]  # fmt: skip
    header = " / ".join(f"{n} Dask workers" for n in DASK_EXAMPLES) if start is not None else ""
    print(f"  {'':38s} {'voxels':>8s} {'CPU':>8s} {'this machine':>13s}  {header}".rstrip())
    for name, part_mb, cases in parts:
        wall = fixed + part_mb * pace
        cpu_s = part_mb * cpu
        line = f"  {name:38s} {part_mb / 1000:5.0f} GB {duration(cpu_s):>8s} {duration(wall):>13s}"
        if start is not None:
            line += "  " + " / ".join(
                duration(cpu_s / (DASK_EFFICIENCY * n) + start + fixed) for n in DASK_EXAMPLES
            )
        print(line)
        if slope is not None and threads.rebuild is not None and name.startswith("full"):
            rebuild = threads.rebuild + slope * max(0, cases - size.cases)
            print(
                f"  one-case rebuild of the {cases}-case release: {threads.rebuild:.1f} s at "
                f"{size.cases} cases + {slope * 1000:.0f} ms per further case = {rebuild:.0f} s "
                f"= {rebuild / wall:.2%} of its full build on this machine"
            )


def print_scaling(measured: dict[tuple[str, int], Measured], ceilings: dict[int, float]) -> None:
    if ("threads", 1) in measured and ("threads", 2) in measured:
        one, two = measured[("threads", 1)], measured[("threads", 2)]
        print(
            f"\nscaling 1 -> 2 workers: build x{one.full['build'] / two.full['build']:.2f}, "
            f"converter x{ceilings[1] / ceilings[2]:.2f}"
        )


def growth(args: argparse.Namespace, env: dict[str, str], threads: Measured) -> float | None:
    """Seconds a one-case rebuild grows by per further case (:func:`rebuild_growth` on a tiny
    sample as big as the real one and on one of ``--scale-*`` cases); None if not measured."""
    if args.scale_verse_cases <= 0 or threads.rebuild is None:
        return None
    print(f"\nhow a one-case rebuild grows with the cases around it ({threads.workers} workers):")
    small = (args.verse_cases, args.mosmed_studies)
    large = (args.scale_verse_cases, args.scale_mosmed_studies)
    (n0, t0), (n1, t1) = rebuild_growth(args.work, env, [small, large], threads.workers, args.runs)
    return max(0.0, (t1 - t0) / (n1 - n0)) if n1 != n0 else None


# -- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/verse-etl-build"))
    parser.add_argument("--verse-cases", type=int, default=12)
    parser.add_argument("--mosmed-studies", type=int, default=4)
    parser.add_argument("--size", default="real")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rebuild-workers", type=int, default=2)
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask runner")
    parser.add_argument(
        "--scale-verse-cases",
        type=int,
        default=100,
        help="VerSe scans of the larger tiny sample whose one-case rebuild gives the rebuild's "
        "growth per case for the projection (0: no growth measured)",
    )
    parser.add_argument("--scale-mosmed-studies", type=int, default=12)
    parser.add_argument("--runs", type=int, default=1, help="runs of each measurement; best kept")
    parser.add_argument("--clean", action="store_true", help="delete --work at the end")
    parser.add_argument("--library-child", type=int, metavar="WORKERS", help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.library_child:
        library_child(args.work, args.library_child, args.launched)
        return
    src = args.work / "src"
    args.work.mkdir(parents=True, exist_ok=True)
    env = environment(args.work)
    os.environ.update({k: v for k, v in env.items() if k.startswith(("PREFECT_", "DO_NOT"))})
    generate(src, args.size, args.verse_cases, args.mosmed_studies)

    jobs, size = volume_jobs(src, build_params(src, 1, args.work / "lib"))
    voxel_mb = size.mb
    print(
        f"local Prefect server up before the measurements ({start_server(env):.1f} s, not part of "
        "any figure): every CLI build finds it running, as after `make run` started it"
    )
    print(
        f"{os.cpu_count()} cores; sample: {size.verse_scans} VerSe scans + {size.mosmed_studies} "
        f"MosMed studies ({args.size}), {len(jobs)} conversions, {voxel_mb:.0f} MB of "
        f"uncompressed source voxels ({size.verse_mb:.0f} VerSe, from {size.verse_gz_mb:.0f} MB "
        f"of .nii.gz; {size.mosmed_mb:.0f} MosMed)\nwall-clock seconds, best of {args.runs}; "
        f"load average (1, 5, 15 min) printed with each figure (other jobs share the cores)\n"
        f"tree memory: the largest sum of Pss over the CLI's processes at one sample (every "
        f"0.2 s), and the sum of each process's own VmHWM (an upper bound)"
    )

    def best(key: str, measure: Callable[..., dict[str, float]], *a: object) -> dict[str, float]:
        return min((measure(*a) for _ in range(args.runs)), key=lambda r: r[key])

    def fresh_build(out: Path, workers: int, runner: str) -> dict[str, float]:
        shutil.rmtree(out, ignore_errors=True)
        return cli_build(src, out, workers, runner, env)

    configs = [("threads", w) for w in args.workers] + ([] if args.no_dask else [("dask", 2)])
    measured: dict[tuple[str, int], Measured] = {}
    misses: list[str] = []
    ceilings: dict[int, float] = {}
    for runner, workers in configs:
        if workers not in ceilings:
            ceilings[workers], cpu = min(
                run_ceiling(jobs, args.work / "ceiling", workers) for _ in range(args.runs)
            )
            print(f"\nconverter alone, {workers} thread(s): {ceilings[workers]:6.1f} s "
                  f"= {voxel_mb / ceilings[workers]:5.0f} MB/s, "
                  f"{cpu / voxel_mb * 1000:.2f} CPU ms/MB  (load {load()})")  # fmt: skip
        ceiling = ceilings[workers]
        lib = (
            best("wall", run_library_child, args.work, workers, env) if runner == "threads" else {}
        )
        out = args.work / f"out-{runner}-{workers}"
        full = best("build", fresh_build, out, workers, runner)
        total = full["build"]
        print(
            f"\n{runner}, {workers} worker(s): verse-etl build (cases, tables, report) "
            f"{total:.1f} s = {voxel_mb / total:.0f} MB/s of voxels "
            f"(ceiling {voxel_mb / ceiling:.0f} MB/s), {full['cpu'] / voxel_mb * 1000:.2f} CPU "
            f"ms/MB (whole process tree)  (load {load()})"
        )
        print(
            f"  peak memory of the process tree: {full['pss']:.0f} MB Pss "
            f"(upper bound {full['hwm_sum']:.0f} MB; {full['processes']} processes)"
        )
        overhead = total - ceiling
        print(f"  overhead over the ceiling: {overhead:.1f} s = {overhead / ceiling:.0%} of it")
        if lib:
            print_overhead(lib, full, ceiling, workers)
        ok = overhead <= TARGETS["overhead"] * ceiling
        print(f"  {'PASS' if ok else 'MISS'}  overhead <= 20% of the ceiling")
        if not ok:
            misses.append(f"{runner} {workers}: overhead {overhead / ceiling:.0%} of the ceiling")
        measured[(runner, workers)] = Measured(workers, full, lib)

        if runner == "threads" and workers == args.rebuild_workers:
            measured[(runner, workers)].rebuild = rebuild_and_rerun(
                src, out, workers, env, total, misses
            )
        shutil.rmtree(out, ignore_errors=True)

    print_scaling(measured, ceilings)
    threads = measured.get(("threads", args.rebuild_workers))
    if threads is not None:
        print_projection(size, threads, measured.get(("dask", 2)), growth(args, env, threads))
    print(f"\nload average at the end: {load()}")
    if misses:
        print("missed targets:\n  " + "\n  ".join(misses))
    if args.clean:
        shutil.rmtree(args.work, ignore_errors=True)


def one_case_rebuild(
    src: Path, out: Path, workers: int, env: dict[str, str], newlines: int = 1
) -> tuple[str, dict[str, float]]:
    """The build of ``out`` again after one scan's centroid file changed (``newlines`` appended:
    same centroids, other bytes, so its case is built again; another count for each rebuild of
    one output, whose saved result has the bytes of the last); the file is restored after. The
    scan's id and the build's figures."""
    from verse_etl.sources.verse import discover_verse_sources

    scan = next(s for s in discover_verse_sources(src / "verse").scans if s.centroids)
    path = scan.centroids.path
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\n" * newlines)
        return scan.scan_id, cli_build(src, out, workers, "threads", env)
    finally:
        path.write_bytes(original)


def rebuild_and_rerun(
    src: Path, out: Path, workers: int, env: dict[str, str], full: float, misses: list[str]
) -> float:
    """Rerun with nothing changed (and with ``--rehash``: every file hashed again), then with
    one scan's centroid file changed; the rebuild's seconds."""
    rerun = cli_build(src, out, workers, "threads", env)
    rehash = cli_build(src, out, workers, "threads", env, rehash=True)
    scan_id, rebuild = one_case_rebuild(src, out, workers, env)
    for name, run, target in (
        ("no-change rerun", rerun, "rerun"),
        ("no-change rerun with --rehash", rehash, None),
        (f"rebuild after {scan_id}'s centroids changed", rebuild, "rebuild"),
    ):
        seconds = run["build"]
        print(
            f"  {name}: {seconds:.1f} s, {run['cpu']:.1f} CPU s (process tree) = "
            f"{seconds / full:.1%} of the full build  (load {load()})"
        )
        if target is None:
            continue
        ok = seconds <= TARGETS[target] * full
        print(f"  {'PASS' if ok else 'MISS'}  {name} < {TARGETS[target]:.0%} of the full build")
        if not ok:
            misses.append(f"{name}: {seconds / full:.1%} of the full build")
    return rebuild["build"]


if __name__ == "__main__":
    main()
