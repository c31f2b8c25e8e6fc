"""CPU of one real-size case build beyond the converter: label statistics and DICOM headers.

Builds, in this process, the largest VerSe scan (CT and vertebra mask) and the first MosMed
study of a real-size sample (``verse-etl sample --size real``, generated once into ``--work``),
in interleaved rounds, with this tree's :mod:`verse_etl.stores.label_stats` and, when
``--against REV`` is given, with that revision's copy of the module (loaded from ``git show``
and swapped in for the scan's store writer), so both variants share the process, its imports
and the machine's load of the moment. For the study, the other variant gives the DICOM header
reader keywords where it now passes pydicom tags resolved once (``specific_tags`` and the
``in`` tests of :mod:`verse_etl.io.dicom`), as it did before.

Prints, per case and variant, the best and median over ``--rounds`` of: the CPU seconds of the
whole process during the case build (every thread: conversion included), and the thread CPU
seconds inside the parts measured here (``LabelStatistics.add`` for the scan, header reading
``scan_files`` for the study), with the load average.

    python benchmarks/case_rows.py [--work /tmp/verse-etl-rows] [--rounds 5] [--against REV]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from revision import module_at

ROOT = Path(__file__).resolve().parents[1]


def load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def generate(src: Path) -> None:
    if (src / "verse").is_dir() and (src / "mosmed").is_dir():
        return
    subprocess.run(
        [str(Path(sys.executable).parent / "verse-etl"), "sample", "--out", str(src),
         "--size", "real", "--verse-cases", "4", "--mosmed-studies", "1", "--overwrite"],
        check=True, stdout=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip


@contextmanager
def thread_cpu(owner: object, name: str, seconds: list[float]) -> Iterator[None]:
    """Add the thread CPU seconds spent in ``owner.name`` (whatever thread calls it)."""
    original = getattr(owner, name)

    def timed(*args: object, **kwargs: object) -> object:
        start = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            seconds.append(time.thread_time() - start)

    setattr(owner, name, timed)
    try:
        yield
    finally:
        setattr(owner, name, original)


def keywords(dicom: ModuleType, on: bool) -> None:
    """Make the header reader pass keywords (``on``), as before, or tags resolved once."""
    from pydicom.tag import Tag

    def name(keyword: str) -> object:
        return keyword if on else Tag(keyword)

    dicom._HEADER_TAG_LIST = [name(k) for k in dicom.HEADER_TAGS]  # type: ignore[attr-defined]
    dicom._ROWS, dicom._COLUMNS = name("Rows"), name("Columns")  # type: ignore[attr-defined]
    dicom._SERIES_TAG_LIST = tuple((k, name(k)) for k in dicom.SERIES_TAGS)  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/verse-etl-rows"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--against", help="git revision whose label_stats.py is the 'then' variant")
    args = parser.parse_args()
    src, out = args.work / "src", args.work / "out"
    generate(src)

    import verse_etl.io.dicom as dicom
    import verse_etl.mosmed.case as mosmed_case
    import verse_etl.stores.label_stats as label_stats
    import verse_etl.verse.store as verse_store
    from verse_etl.mosmed.case import build_mosmed_study
    from verse_etl.params import load_params
    from verse_etl.sources.mosmed import discover_mosmed
    from verse_etl.sources.verse import discover_verse_sources
    from verse_etl.verse.case import build_verse_scan

    params = load_params(ROOT / "params.yaml").build
    found = discover_verse_sources(src / "verse")
    with_mask = [s for s in found.scans if s.mask is not None]
    scan = max(with_mask, key=lambda s: (src / "verse" / s.ct.path).stat().st_size)
    study = discover_mosmed(src / "mosmed", params.mosmed.annotation_dirs)[0]
    variants: dict[str, ModuleType] = {"now": label_stats}
    if args.against:
        variants[f"at {args.against}"] = module_at(
            args.against, "verse_etl/stores/label_stats.py", "label_stats_then"
        )

    def verse() -> object:
        return build_verse_scan(scan, src / "verse", out, params.volumes, params.checks)

    def mosmed() -> object:
        return build_mosmed_study(study, src / "mosmed", out, params.volumes, params.mosmed)

    cases: dict[str, tuple[Callable[[], object], object, str]] = {
        f"VerSe {scan.scan_id}": (verse, None, "LabelStatistics.add"),
        f"MosMed {study.folder}": (mosmed, mosmed_case, "scan_files"),
    }
    cpu: dict[tuple[str, str], list[float]] = {}
    part: dict[tuple[str, str], list[float]] = {}
    loads = [load()]
    for _ in range(args.rounds):
        for case, (build, owner, _name) in cases.items():
            for variant, module in variants.items():
                spent: list[float] = []
                verse_store.LabelStatistics = module.LabelStatistics  # type: ignore[attr-defined]
                keywords(dicom, module is not label_stats)
                target = module.LabelStatistics if owner is None else owner
                name = "add" if owner is None else "scan_files"
                shutil.rmtree(out, ignore_errors=True)
                with thread_cpu(target, name, spent):
                    start = time.process_time()
                    build()
                    cpu.setdefault((case, variant), []).append(time.process_time() - start)
                part.setdefault((case, variant), []).append(sum(spent))
        loads.append(load())
    verse_store.LabelStatistics = label_stats.LabelStatistics  # type: ignore[attr-defined]
    keywords(dicom, False)
    shutil.rmtree(out, ignore_errors=True)

    print(f"{args.rounds} interleaved rounds in one process; load average (1, 5, 15 min) before "
          f"and after each round: {' | '.join(loads)}")  # fmt: skip
    print("CPU seconds (process, every thread) per case build; and thread CPU seconds in the part")
    for case, (_build, _owner, name) in cases.items():
        for variant in variants:
            whole, inner = cpu[(case, variant)], part[(case, variant)]
            print(
                f"  {case:32s} {variant:12s} case {min(whole):6.3f} best {statistics.median(whole):6.3f}"
                f" median; {name} {min(inner):6.3f} best {statistics.median(inner):6.3f} median"
            )


if __name__ == "__main__":
    main()
