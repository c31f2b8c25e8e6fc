"""A tiny sample built through the same library calls the flow's tasks make (no Prefect server),
for tests about what consumers see rather than about orchestration."""

from __future__ import annotations

from pathlib import Path

from verse_etl.flows.build import tables

from verse_etl.cases.outputs import save_case_result
from verse_etl.mosmed.case import build_mosmed_study
from verse_etl.mosmed.case import source_results as mosmed_source_results
from verse_etl.params import BuildParams, SourceParams
from verse_etl.sources.mosmed import discover_mosmed, read_id_mapping
from verse_etl.sources.verse import discover_verse, discover_verse_sources
from verse_etl.tables.assemble import BuildSummary
from verse_etl.verse.case import build_verse_scan, source_results
from verse_etl_sample import SampleManifest, write_sample


def build_tiny(src: Path, out: Path, seed: int) -> SampleManifest:
    """Write a tiny sample (4 VerSe scans, 1 MosMed study) into ``src`` and build it into ``out``."""
    manifest = write_sample(src, seed=seed, verse_cases=4, mosmed_studies=1, size="tiny")
    params = BuildParams(
        out=str(out), sources=SourceParams(verse=str(src / "verse"), mosmed=str(src / "mosmed"))
    )
    for scan in discover_verse(src / "verse"):
        build_verse_scan(scan, src / "verse", out, params.volumes)
    for study in discover_mosmed(src / "mosmed"):
        build_mosmed_study(study, src / "mosmed", out, params.volumes)
    tables(params)
    return manifest


def build_sources(params: BuildParams) -> BuildSummary:
    """What ``verse-etl build`` runs (``flows/build.py``: ingest each source given, then the
    tables), as plain calls one case after the other, into an empty ``params.out``."""
    out = Path(params.out)
    if params.sources.verse:
        verse = Path(params.sources.verse)
        found = discover_verse_sources(verse)
        scans = [
            build_verse_scan(s, verse, out, params.volumes, params.checks) for s in found.scans
        ]
        for result in source_results(found, verse, scans, out):
            save_case_result(out, result)
    if params.sources.mosmed:
        mosmed, options = Path(params.sources.mosmed), params.mosmed
        mapping = read_id_mapping(Path(options.id_mapping)) if options.id_mapping else ()
        for study in discover_mosmed(mosmed, options.annotation_dirs, mapping):
            build_mosmed_study(
                study, mosmed, out, params.volumes, options, limits=params.checks.limits
            )
        for result in mosmed_source_results(mosmed, options.annotation_dirs):
            save_case_result(out, result)
    return tables(params)
