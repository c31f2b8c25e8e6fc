"""Prefect's share of a build's wall time, from the figures the flows log (not estimated).

Every command that runs a flow ends with a line ``verse-etl prefect cost: <command>: P s of
W s (...)`` (``flows/timing.py``): what Prefect took on that process's critical path (its
import, waiting for the API, the flow and task runs around the library's work, sending queued
logs and events). This script runs, in a fresh clone of the repository (the committed tree)
with this environment's ``.venv``, and prints for each the wall time, the sum of those lines
and their share:

1. ``make run`` on a fresh clone (sample, ``dvc repro``, push, summary; no Prefect server
   running, a new Prefect home), ``--repeat`` times (a new clone each time; the median and
   the spread of the share are printed: single runs move by a few points here);
2. ``dvc repro -f``: every stage again with the server still up (every case unchanged);
3. ``dvc repro`` with nothing changed (DVC runs no stage: no Prefect at all);
4. unless ``--no-real``: ``verse-etl build`` of a ``--size real`` sample (512 x 512 x 200-500
   volumes, ``--real-verse-cases`` scans and ``--real-mosmed-studies`` studies), the local
   server stopped first so that the build pays its start.

The local server's own CPU time (its start, from its keeper's log) is printed too: it runs
beside the build, off the critical path, but on the same cores. Wall times are disturbed by
other jobs on shared cores: the load average is printed with every figure.

    python benchmarks/prefect_share.py [--work /tmp/verse-etl-prefect-share] [--no-real] [--repeat 3]
        [--real-verse-cases 4] [--real-mosmed-studies 1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
COST = re.compile(
    r"verse-etl prefect cost: (?P<command>.+?): (?P<prefect>[\d.]+) s of (?P<wall>[\d.]+) s \((?P<share>\d+)%; (?P<parts>[^)]*)\)"
)
SERVER = re.compile(r"Prefect server \S+ up in (?P<wall>[\d.]+) s, (?P<cpu>[\d.]+) s CPU")


def load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def environment(repo: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env['PATH']}"
    env["PREFECT_HOME"] = str(repo / ".prefect")
    return env


def timed(args: list[str], repo: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(
        args, cwd=repo, env=environment(repo), capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} exited {proc.returncode}:\n{output}")
    return wall, output


def report(name: str, wall: float, output: str) -> float:
    costs = [m.groupdict() for m in COST.finditer(output)]
    prefect = sum(float(c["prefect"]) for c in costs)
    parts: dict[str, float] = {}
    for c in costs:
        for part in c["parts"].split(", "):
            key, _, seconds = part.rpartition(" ")
            parts[key] = parts.get(key, 0.0) + float(seconds)
    print(
        f"{name}: {wall:.1f} s wall, Prefect {prefect:.1f} s = {prefect / wall:.1%} (load {load()})"
    )
    if parts:
        print("    parts: " + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items()))
    for c in costs:
        print(f"    {c['command']}: {float(c['prefect']):.2f} s of {float(c['wall']):.2f} s")
    return prefect / wall


def fresh_clone(repo: Path) -> None:
    shutil.rmtree(repo, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    (repo / ".venv").symlink_to(VENV)


def server_starts(repo: Path, before: int = 0) -> list[tuple[float, float]]:
    log = repo / ".prefect" / "verse-etl-server.log"
    text = log.read_text() if log.exists() else ""
    return [(float(m["wall"]), float(m["cpu"])) for m in SERVER.finditer(text)][before:]


def print_server(repo: Path, before: int) -> int:
    starts = server_starts(repo)
    for wall, cpu in starts[before:]:
        print(f"    local server started beside it: up in {wall:.1f} s, {cpu:.1f} s CPU")
    return len(starts)


def stop_server(repo: Path) -> None:
    state = repo / ".prefect" / "verse-etl-server.json"
    try:
        pid = int(json.loads(state.read_text())["keeper_pid"])
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError, KeyError):
        return
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/verse-etl-prefect-share"))
    parser.add_argument("--no-real", action="store_true")
    parser.add_argument(
        "--repeat", type=int, default=3, help="make runs, each on a fresh clone (default 3)"
    )
    parser.add_argument("--real-verse-cases", type=int, default=4)
    parser.add_argument("--real-mosmed-studies", type=int, default=1)
    args = parser.parse_args()
    if not (VENV / "bin" / "verse-etl").exists():
        sys.exit(f"{VENV}: no environment; run `make setup` first")
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    repo = args.work / "repo"
    print(f"fresh clones of {ROOT} at {repo} (environment {VENV}); uptime: {load()}")
    shares = []
    try:
        for run in range(1, max(1, args.repeat) + 1):
            if run > 1:
                stop_server(repo)
            fresh_clone(repo)
            # The clone's files are newer than .venv/.installed: -o keeps make from reinstalling.
            wall, output = timed(["make", "-o", ".venv/.installed", "run"], repo)
            shares.append(report(f"make run {run} (fresh clone)", wall, output))
            seen = print_server(repo, 0)
        if len(shares) > 1:
            shares.sort()
            print(
                f"make run, {len(shares)} fresh clones: Prefect's share median "
                f"{shares[len(shares) // 2]:.1%} (from {shares[0]:.1%} to {shares[-1]:.1%})"
            )
        wall, output = timed(["dvc", "repro", "-f"], repo)
        report("dvc repro -f (rerun, every case unchanged)", wall, output)
        seen = print_server(repo, seen)
        wall, output = timed(["dvc", "repro"], repo)
        report("dvc repro (nothing changed)", wall, output)
        if not args.no_real:
            stop_server(repo)
            sample = args.work / "real"
            timed(
                [
                    "verse-etl", "sample", "--out", str(sample), "--size", "real",
                    "--verse-cases", str(args.real_verse_cases),
                    "--mosmed-studies", str(args.real_mosmed_studies),
                ],
                repo,
            )  # fmt: skip
            wall, output = timed(
                [
                    "verse-etl", "build", "--verse", str(sample / "verse"),
                    "--mosmed", str(sample / "mosmed"), "--out", str(args.work / "real-build"),
                ],
                repo,
            )  # fmt: skip
            report(
                f"verse-etl build --size real ({args.real_verse_cases} VerSe scans, "
                f"{args.real_mosmed_studies} MosMed studies; server stopped before)",
                wall,
                output,
            )
            print_server(repo, seen)
    finally:
        stop_server(repo)


if __name__ == "__main__":
    main()
