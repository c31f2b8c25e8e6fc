"""Orchestration overhead of a build: the library alone vs the same cases through the Prefect flow.

Prints wall-clock seconds for (a) generating the sample, (b) building every case and the tables
with plain function calls, (c) the same build through `flows.build.run_build` on the temporary
local Prefect server (start-up included), and the overhead (c - b) as a share of (c).

    python benchmarks/build.py [--size small] [--verse-cases 6] [--mosmed-studies 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small")
    parser.add_argument("--verse-cases", type=int, default=6)
    parser.add_argument("--mosmed-studies", type=int, default=2)
    parser.add_argument(
        "--workers", type=int, default=1, help="flow workers (1 compares like for like)"
    )
    args = parser.parse_args()

    import verse_etl.flows  # noqa: F401  (sets the Prefect environment defaults before Prefect loads)

    from verse_etl.assemble import assemble
    from verse_etl.cases.mosmed import build_mosmed_study
    from verse_etl.cases.verse import build_verse_scan
    from verse_etl.params import BuildParams, SourceParams
    from verse_etl.sample import write_sample
    from verse_etl.sources.mosmed import discover_mosmed
    from verse_etl.sources.verse import discover_verse

    work = Path(tempfile.mkdtemp(prefix="verse-etl-bench-"))
    try:
        start = time.perf_counter()
        write_sample(
            work / "src",
            verse_cases=args.verse_cases,
            mosmed_studies=args.mosmed_studies,
            size=args.size,
        )
        t_sample = time.perf_counter() - start

        params = BuildParams(
            out=str(work / "plain"),
            sources=SourceParams(
                verse=str(work / "src" / "verse"), mosmed=str(work / "src" / "mosmed")
            ),
            workers=args.workers,
        )
        start = time.perf_counter()
        verse_root, mosmed_root, out = (
            Path(params.sources.verse),
            Path(params.sources.mosmed),
            Path(params.out),
        )
        results = [
            build_verse_scan(s, verse_root, out, params.volumes) for s in discover_verse(verse_root)
        ]
        results += [
            build_mosmed_study(s, mosmed_root, out, params.volumes)
            for s in discover_mosmed(mosmed_root)
        ]
        assemble(results, out, params.checks)
        t_plain = time.perf_counter() - start

        from verse_etl.flows.build import run_build

        start = time.perf_counter()
        summary = run_build(BuildParams(**{**params.__dict__, "out": str(work / "flow")}))
        t_flow = time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"sample ({args.size}, {args.verse_cases} VerSe + {args.mosmed_studies} MosMed): {t_sample:6.1f} s"
    )
    print(f"library only, serial:                    {t_plain:6.1f} s")
    print(
        f"Prefect flow, {args.workers} workers, server start-up: {t_flow:6.1f} s  (rows {summary.rows})"
    )
    print(f"orchestration overhead (flow - library):  {t_flow - t_plain:6.1f} s")


if __name__ == "__main__":
    main()
