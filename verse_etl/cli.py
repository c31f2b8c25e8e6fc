"""The ``verse-etl`` command line: a thin layer over the library and the flows."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from verse_etl.errors import VerseEtlError, output_error, output_trouble
from verse_etl.params import BuildParams, Params, SampleSize, SourceParams, load_params

if TYPE_CHECKING:
    from verse_etl.tables.summary import BuildSummary

# Every command imports what it needs when it runs: `--help`, `query` and `summary` must answer
# at once, so nothing here may import pandas, the contracts, Prefect or the image readers
# (tests/unit/test_cli.py guards the import set).

# Enumerated options are Literal types: typer lists the choices in --help and rejects any
# other value with the valid list.
Runner = Literal["threads", "dask"]
QueryFormat = Literal["table", "csv", "json"]

app = typer.Typer(
    name="verse-etl",
    help="Spine CT datasets (VerSe, MosMed CTLungCa-500) as one validated, versioned dataset.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)

ParamsOption = Annotated[Path, typer.Option("--params", help="params.yaml to read defaults from.")]


@contextmanager
def _reported() -> Iterator[None]:
    """Turn a verse-etl error into one line on stderr and the error's exit code, no traceback.

    Exit codes: 1 the build ran but records failed checks set to ``raise`` (or a release was
    refused), 2 bad input or configuration, 3 another build holds the workspace, 4 the outputs
    cannot be written (disk full, quota, read-only).
    """
    try:
        yield
    except VerseEtlError as e:
        console.print(f"[red]{e.label}:[/red] {e}")
        raise typer.Exit(e.exit_code) from e
    except OSError as e:
        # A full disk (or quota, or read-only filesystem) wherever it strikes: one line with
        # the path, not a traceback.
        full = output_trouble(e)
        if full is None:
            raise
        error = output_error(full, Path.cwd())
        console.print(f"[red]{error.label}:[/red] {error}")
        raise typer.Exit(error.exit_code) from e


def _flow_entry(name: str) -> Callable[..., Any]:
    """The flow entry point ``name`` of :mod:`verse_etl.flows`, imported with Prefect and the
    library it composes, without the cyclic garbage collector (:mod:`verse_etl.importing`)."""
    from verse_etl import flows
    from verse_etl.importing import imports_without_collector

    with imports_without_collector():
        # The local Prefect server (if one is needed) starts first, while the rest imports: the
        # library, then Prefect (timed as what it adds to the library), then the flows.
        flows.start_prefect(flows.entry_module(name))
        return getattr(flows, name)


def _params(path: Path) -> Params:
    # Without a params file every value comes from the defaults and the options.
    return load_params(path) if path.exists() else Params()


@app.command()
def sample(
    out: Annotated[Path, typer.Option(help="Folder to write the sample sources into.")],
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    verse_cases: Annotated[int, typer.Option(help="VerSe scans across both releases (>= 4).")] = 6,
    mosmed_studies: Annotated[int, typer.Option(help="MosMed studies with annotation.")] = 2,
    size: Annotated[SampleSize, typer.Option(help="Volume sizes of the sample.")] = "small",
    annotations: Annotated[
        list[Path] | None,
        typer.Option(
            help="Folder of real annotation files, v1 or v2 (repeat for both releases): write a "
            "matching synthetic study for each study instead."
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace sample folders already in --out.")
    ] = False,
    edge_cases: Annotated[
        bool,
        typer.Option(
            help="Also write MosMed studies that are not clean (packed, old identifiers, tilt, "
            "missing slice, ...) with an identifier mapping CSV, to see what a build reports."
        ),
    ] = False,
) -> None:
    """Write deterministic sample sources in the real VerSe and MosMed layouts."""
    from verse_etl_sample import write_annotation_studies, write_sample

    start = time.perf_counter()
    with _reported():
        if annotations:
            manifest = write_annotation_studies(annotations, out, seed=seed, overwrite=overwrite)
        else:
            manifest = write_sample(
                out,
                seed=seed,
                verse_cases=verse_cases,
                mosmed_studies=mosmed_studies,
                size=size,
                overwrite=overwrite,
                edge_cases=edge_cases,
            )
    console.print(
        f"sample written to {out} in {time.perf_counter() - start:.1f} s: "
        f"{len(manifest.verse)} VerSe scans, {len(manifest.mosmed)} MosMed studies, "
        f"{len(manifest.files)} files"
    )


RunnerOption = Annotated[
    Runner,
    typer.Option(
        "--runner",
        help="Task runner: threads, or dask (a LocalCluster or --dask-address).",
    ),
]
DaskOption = Annotated[
    str | None,
    typer.Option("--dask-address", help="Scheduler address of an existing Dask cluster."),
]
WaitOption = Annotated[
    float,
    typer.Option("--wait", help="Seconds to wait for another build on the same output folder."),
]
PruneOption = Annotated[
    bool,
    typer.Option(
        "--prune",
        help="Delete the outputs of cases no longer in a given source (each is logged); never "
        "for a source left out, a missing folder, or more than build.prune_max_loss of its cases.",
    ),
]
RehashOption = Annotated[
    bool,
    typer.Option(
        "--rehash",
        help="Read and hash every source file again (else a file whose size, mtime, ctime, inode "
        "and device are unchanged since it was hashed keeps its digest; build.rehash).",
    ),
]
ForceOption = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Run the build flow even when nothing changed (else a build with nothing to do "
        "says so and exits 0 before Prefect starts).",
    ),
]
MappingOption = Annotated[
    Path | None,
    typer.Option(
        help="CSV old_folder,old_series_uid,folder,series_uid: lets annotation files with "
        "the older MosMed identifiers match (overrides params mosmed.id_mapping)."
    ),
]


def _build_params(
    params_file: Path,
    verse: Path | None,
    mosmed: Path | None,
    out: str | None,
    workers: int | None,
    mosmed_id_mapping: Path | None = None,
    prune: bool = False,
    rehash: bool = False,
) -> BuildParams:
    with _reported():
        params = _params(params_file).build
        if prune:
            params = replace(params, prune=True)
        if rehash:
            params = replace(params, rehash=True)
        if verse is not None or mosmed is not None:
            params = replace(
                params,
                sources=SourceParams(
                    verse=str(verse) if verse is not None else "",
                    mosmed=str(mosmed) if mosmed is not None else "",
                ),
            )
        if out is not None:
            params = replace(params, out=out)
        if workers is not None:
            params = replace(params, workers=workers)
        if mosmed_id_mapping is not None:
            params = replace(
                params, mosmed=replace(params.mosmed, id_mapping=str(mosmed_id_mapping))
            )
    for name, root in (("VerSe", params.sources.verse), ("MosMed", params.sources.mosmed)):
        if root and not Path(root).is_dir():
            console.print(
                f"[red]error:[/red] {root}: {name} source folder not found; check the path"
            )
            raise typer.Exit(2)
    if params.mosmed.id_mapping:
        from verse_etl.sources.mosmed import read_id_mapping

        try:  # a bad mapping is a configuration error: say so before any case runs
            read_id_mapping(Path(params.mosmed.id_mapping))
        except VerseEtlError as e:
            console.print(f"[red]error:[/red] {e} (mosmed.id_mapping or --mosmed-id-mapping)")
            raise typer.Exit(2) from e
    return params


def _print_summary(summary: BuildSummary, out: str, seconds: float, built: bool = True) -> None:
    table = Table(title=f"verse-etl -> {out} ({seconds:.1f} s)")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in summary.rows.items():
        table.add_row(name, str(n))
    Console().print(table)
    cases = (
        f"cases: {summary.cases} ({summary.converted} built, {summary.reused} unchanged); "
        f"stores written: {summary.stores_written}"
        if built
        else f"tables from {summary.cases} saved results (cases and source-level results)"
    )
    Console().print(f"{cases}; quarantined records: {summary.quarantined}")
    for reason in summary.pruning.values():
        Console().print(f"pruning: {reason}")


def _unchanged_build(params: BuildParams, wait: float) -> BuildSummary | None:
    """The summary of the last build if a build would change nothing, else None (and why is
    printed). Answered from the build folder before Prefect is imported or its server started:
    first the stamp of the last build (file stats, the standard library only), then, if it is
    not conclusive, the full check (which imports the case modules)."""
    from verse_etl.publish.stamp import check_stamp

    if "://" in str(params.out):
        return None  # a URL build always runs
    if not Path(params.out).is_dir():
        Console().print(f"building: {params.out}: no build yet")
        return None
    stamp = check_stamp(params, wait)
    if stamp.changed == "sources":
        # Files added, removed or changed: the full check could only find out which by hashing
        # them, as the build does (which then starts at once, ~1 s sooner).
        Console().print("building: source files changed since the last build")
        return None
    if stamp.summary is not None:
        return stamp.summary
    from verse_etl.publish.current import unchanged_build

    check = unchanged_build(params, wait)
    if check.summary is None:
        Console().print(f"building: {check.reason}")
    return check.summary


@app.command()
def build(
    params_file: ParamsOption = Path("params.yaml"),
    verse: Annotated[
        Path | None, typer.Option(help="VerSe source root (overrides params).")
    ] = None,
    mosmed: Annotated[
        Path | None, typer.Option(help="MosMed source root (overrides params).")
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(
            help="Build output folder, or an fsspec URL such as s3://bucket/prefix "
            "(overrides params)."
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Cases built in parallel.")] = None,
    runner: RunnerOption = "threads",
    dask_address: DaskOption = None,
    wait: WaitOption = 0.0,
    mosmed_id_mapping: MappingOption = None,
    prune: PruneOption = False,
    rehash: RehashOption = False,
    force: ForceOption = False,
) -> None:
    """Run the whole build flow: every source -> Zarr stores + Parquet tables + report (the
    DVC stage `build`)."""
    params = _build_params(
        params_file, verse, mosmed, out, workers, mosmed_id_mapping, prune, rehash
    )
    start = time.perf_counter()
    unchanged = None if force else _unchanged_build(params, wait)
    if unchanged is not None:
        Console().print(
            f"nothing changed since the last build of {params.out} (sources, parameters, "
            "code, tables and report as built); --force runs the build anyway"
        )
        _print_summary(unchanged, params.out, time.perf_counter() - start)
        return
    run_build = _flow_entry("run_build")
    with _reported():
        summary = run_build(params, runner, dask_address, wait)
    _print_summary(summary, params.out, time.perf_counter() - start)


@app.command()
def ingest(
    sources: Annotated[list[str], typer.Argument(help="Sources to ingest: verse, mosmed.")],
    params_file: ParamsOption = Path("params.yaml"),
    workers: Annotated[int | None, typer.Option(help="Cases built in parallel.")] = None,
    runner: RunnerOption = "threads",
    dask_address: DaskOption = None,
    wait: WaitOption = 0.0,
    mosmed_id_mapping: MappingOption = None,
    prune: PruneOption = False,
    rehash: RehashOption = False,
) -> None:
    """Run the ingest flow for some sources: stores and per-case results, no tables (for
    manual use: `verse-etl build` and `dvc repro` do it all in one run)."""
    from verse_etl.cases.outputs import SOURCES

    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        console.print(f"[red]error:[/red] unknown source(s) {unknown} (expected some of {SOURCES})")
        raise typer.Exit(2)
    params = _build_params(params_file, None, None, None, workers, mosmed_id_mapping, prune, rehash)
    run_ingest = _flow_entry("run_ingest")
    start = time.perf_counter()
    with _reported():
        ingested = run_ingest(tuple(sources), params, runner, dask_address, wait)
    cases, derived = ingested.cases, ingested.derived
    built = sum(r.converted for r in cases)
    states = ", ".join(f"{r.case_id} {'built' if r.converted else 'unchanged'}" for r in derived)
    extra = f" + {len(derived)} source-level ({states})"
    Console().print(
        f"ingested {', '.join(sources)} in {time.perf_counter() - start:.1f} s: {len(cases)} cases "
        f"({built} built, {len(cases) - built} unchanged){extra if derived else ''}, "
        f"{sum(len(r.quarantine) for r in ingested.results)} quarantined records",
        soft_wrap=True,  # one line in logs too (a console that is not a terminal is 80 wide)
    )
    for decision in ingested.pruning:
        if decision.noteworthy:
            Console().print(f"pruning: {decision.reason}")


@app.command("tables")
def tables_command(params_file: ParamsOption = Path("params.yaml"), wait: WaitOption = 0.0) -> None:
    """Assemble, validate and write the Parquet tables from the ingested cases (for manual
    use after `verse-etl ingest`: `verse-etl build` and `dvc repro` do it all in one run)."""
    params = _build_params(params_file, None, None, None, None)
    run_tables = _flow_entry("run_tables")
    start = time.perf_counter()
    with _reported():
        summary = run_tables(params, wait)
    _print_summary(summary, params.out, time.perf_counter() - start, built=False)


@app.command()
def release(
    tag: Annotated[str, typer.Argument(help="Version tag, e.g. v2026.11.")],
    params_file: ParamsOption = Path("params.yaml"),
    push: Annotated[bool, typer.Option(help="Push the outputs to the default DVC remote.")] = False,
) -> None:
    """Release the current (up-to-date) build as a dataset version: git tag + dvc.lock + notes.

    Exits 1 without a tag when nothing changed since the previous release.
    """
    from verse_etl.publish.pipeline import unchanged_release
    from verse_etl.publish.release import release as make_release

    params = _params(params_file).build
    repo = Path.cwd()
    previous = unchanged_release(repo) if (repo / "dvc.lock").exists() else None
    if previous is not None:
        # Like `git commit` with nothing to commit: say so, make nothing, exit 1.
        console.print(
            f"nothing to release: dvc.lock is the one released as {previous} and nothing was "
            "committed since; no tag made. Change sources or params, `dvc repro`, then release."
        )
        raise typer.Exit(1)
    with _reported():
        notes = make_release(repo, tag, params.out)
    Console().print(notes.to_markdown())
    if push:
        from dvc.repo import Repo

        Repo(".").push()
        Console().print("outputs pushed to the default DVC remote")


@app.command()
def serve(
    params_file: ParamsOption = Path("params.yaml"),
    cron: Annotated[str | None, typer.Option(help="Cron schedule (overrides params).")] = None,
    name: Annotated[str | None, typer.Option(help="Deployment name (overrides params).")] = None,
) -> None:
    """Serve the scheduled-release deployment (build, release if changed, push) until stopped.

    Needs a Prefect API that outlives the command: PREFECT_API_URL or the active profile (a
    `prefect server start`, a team server, Prefect Cloud); refuses without one.
    """
    with _reported():
        params = _params(params_file)
        schedule = replace(
            params.schedule,
            cron=cron or params.schedule.cron,
            deployment=name or params.schedule.deployment,
        )
    from verse_etl import flows

    with _reported():
        api = flows.serve_api()
    console.print(f"serving deployment {schedule.deployment!r} on {api} (cron {schedule.cron})")
    flows.serve_deployment(
        Path.cwd(),
        schedule.cron,
        schedule.deployment,
        params.build.out,
        schedule.remote,
        schedule.push,
    )


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="SQL over the views scans, vertebrae, series, ...")],
    out: Annotated[
        str, typer.Option(help="Build folder, or the URL of a build published to one (s3://...).")
    ] = "data/build",
    fmt: Annotated[QueryFormat, typer.Option("--format", help="Output format.")] = "table",
) -> None:
    """Run SQL on the DuckDB catalog of a build (one view per Parquet table)."""
    from verse_etl.read.catalog import query as run_query
    from verse_etl.read.query_output import render

    with _reported():
        # Descriptions are for SQL clients browsing the catalog; a one-off query skips them
        # (and the contracts they come from) to answer at once.
        result = run_query(out, sql, comments=False)
    typer.echo(render(result, fmt), nl=False)


@app.command()
def dictionary(
    out: Annotated[Path, typer.Option(help="Markdown file to write.")] = Path(
        "docs/data-dictionary.md"
    ),
    readme: Annotated[
        Path, typer.Option(help="README whose generated table overview is refreshed.")
    ] = Path("README.md"),
) -> None:
    """Write the data dictionary and the README's table overview from the table contracts."""
    from verse_etl.cases.records import write_text_atomic
    from verse_etl.schemas import TABLES
    from verse_etl.tables.dictionary import render_dictionary, update_readme

    with _reported():
        # The README first: a README without its block fails before anything is written.
        overview = update_readme(readme.read_text(), TABLES, readme)
        write_text_atomic(out, render_dictionary(TABLES))
        write_text_atomic(readme, overview)
    console.print(f"data dictionary written to {out}, table overview to {readme}")


@app.command()
def fetch(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="verse19, verse20, mosmed-annotations or entry names; none: all."),
    ] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="Show the catalog and what is here.")
    ] = False,
    check: Annotated[
        bool,
        typer.Option("--check", help="Report upstream changes of pinned sources; no download."),
    ] = False,
    mosmed_images: Annotated[
        bool, typer.Option("--mosmed-images", help="Check the MosMed studies placed by hand.")
    ] = False,
    base_url: Annotated[
        str | None,
        typer.Option(
            envvar="VERSE_ETL_FETCH_BASE_URL", help="Mirror with <host>/<path> of each URL."
        ),
    ] = None,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Fetch the public releases of the built-in catalog (resumable), each pinned by DVC."""
    from verse_etl.mosmed.images import check_mosmed_images, render_images_report
    from verse_etl.sources import fetch as raw_sources
    from verse_etl.sources.catalog import MOSMED_IMAGES, select_entries
    from verse_etl.sources.mosmed import read_id_mapping

    with _reported():
        params = _params(params_file)
        root, entries = Path(params.fetch.root), select_entries(names or [])
        if list_:
            text, failed = raw_sources.render_list(root, entries), False
        elif check:
            checks = raw_sources.check_upstream(Path.cwd(), root, entries)
            text = raw_sources.render_checks(checks)
            failed = any(c.status not in ("unchanged", "not fetched") for c in checks)
        elif mosmed_images:
            mosmed, mapping = (root / MOSMED_IMAGES.dest).parent, params.build.mosmed.id_mapping
            report = check_mosmed_images(
                mosmed,
                params.build.mosmed.annotation_dirs,
                read_id_mapping(Path(mapping)) if mapping else (),
            )
            text, failed = render_images_report(report), not report.complete
        else:
            url = params.fetch.base_url if base_url is None else base_url
            outcomes = raw_sources.fetch_sources(Path.cwd(), root, entries, url)
            text, failed = raw_sources.render_outcomes(outcomes), any(o.error for o in outcomes)
    Console(width=200).print(text, markup=False, highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command()
def report(
    out: Annotated[Path, typer.Option(help="Build folder.")] = Path("data/build"),
    wait: WaitOption = 0.0,
) -> None:
    """Draw QC pictures from the stores and write the HTML build report (<out>/report)."""
    from verse_etl.publish.lock import workspace_lock
    from verse_etl.report.page import write_report

    # The report reads tables and stores: never while a build is rewriting them.
    with _reported(), workspace_lock(out, timeout=wait):
        path = write_report(out)
    Console().print(f"report written to {path}")


@app.command()
def summary(
    out: Annotated[Path, typer.Argument(help="Build output folder.")] = Path("data/build"),
) -> None:
    """Print what a finished build holds: rows per table, stores and their size, quarantine."""
    from verse_etl.tables.inventory import read_inventory

    with _reported():
        inventory = read_inventory(out)
    table = Table(title=f"verse-etl dataset at {out}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in inventory.rows.items():
        table.add_row(name, str(n))
    Console().print(table)
    Console().print(
        f"volume stores: {inventory.stores} ({inventory.store_bytes / 1e6:.1f} MB in "
        f"{inventory.store_files} files)"
    )
    for check, n in inventory.quarantine_by_check.items():
        Console().print(f"quarantine: {n} x {check}")


export_app = typer.Typer(
    help="Export a build's volumes for training tools (streamed from the stores).",
    no_args_is_help=True,
)
app.add_typer(export_app, name="export")
BuildOption = Annotated[
    str, typer.Option("--build", help="Build folder (or s3:// URL) to export from.")
]


@export_app.command("nnunet")
def export_nnunet_command(
    out: Annotated[Path, typer.Option(help="Folder of nnU-Net raw datasets (nnUNet_raw).")],
    build: BuildOption = "data/build",
    dataset_id: Annotated[int, typer.Option(help="nnU-Net dataset id (1..999).")] = 501,
    name: Annotated[str, typer.Option(help="nnU-Net dataset name.")] = "VerSe",
) -> None:
    """The labelled VerSe scans as an nnU-Net v2 raw dataset (imagesTr, labelsTr, dataset.json)."""
    from verse_etl.read.export import export_nnunet

    with _reported():
        exported = export_nnunet(build, out, dataset_id, name)
    console.print(f"nnU-Net v2 raw dataset written to {exported.root}")
    _report_skipped(exported.skipped)


@export_app.command("nifti")
def export_nifti_command(
    out: Annotated[Path, typer.Option(help="Folder to write <source>/<id>_ct.nii.gz into.")],
    build: BuildOption = "data/build",
) -> None:
    """Every case as NIfTI (CT, and the VerSe label image) with its source affine."""
    from verse_etl.read.export import export_nifti

    with _reported():
        exported = export_nifti(build, out)
    console.print(f"{len(exported.written)} NIfTI files written to {out}")
    _report_skipped(exported.skipped)


def _report_skipped(skipped: Sequence[VerseEtlError]) -> None:
    """One line per case an export skipped, then exit 1 if there was any (the rest is written)."""
    for error in skipped:
        console.print(f"[red]skipped:[/red] {error}", soft_wrap=True)
    if skipped:
        console.print(f"{len(skipped)} case(s) skipped: nothing written for them")
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - console entry point
    app()
