"""The ``verse-etl`` command line: a thin layer over the library and the flows."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from verse_etl.errors import VerseEtlError
from verse_etl.params import SAMPLE_SIZES, Params, SourceParams, load_params

app = typer.Typer(
    name="verse-etl",
    help="Spine CT datasets (VerSe, MosMed CTLungCa-500) as one validated, versioned dataset.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)

ParamsOption = Annotated[Path, typer.Option("--params", help="params.yaml to read defaults from.")]


def _params(path: Path) -> Params:
    # Without a params file every value comes from the defaults and the options.
    return load_params(path) if path.exists() else Params()


@app.command()
def sample(
    out: Annotated[Path, typer.Option(help="Folder to write the sample sources into.")],
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    verse_cases: Annotated[int, typer.Option(help="VerSe scans across both releases (>= 4).")] = 6,
    mosmed_studies: Annotated[int, typer.Option(help="MosMed studies with annotation.")] = 2,
    size: Annotated[
        str, typer.Option(help=f"Volume sizes: one of {', '.join(SAMPLE_SIZES)}.")
    ] = "small",
    annotations: Annotated[
        Path | None,
        typer.Option(
            help="Real annotation files: write a matching synthetic study for each instead."
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
    from verse_etl.sample import write_annotation_studies, write_sample

    start = time.perf_counter()
    try:
        if annotations is not None:
            manifest = write_annotation_studies(annotations, out, seed=seed, overwrite=overwrite)
        else:
            if size not in SAMPLE_SIZES:
                raise typer.BadParameter(f"--size is {size!r} (expected one of {SAMPLE_SIZES})")
            manifest = write_sample(
                out,
                seed=seed,
                verse_cases=verse_cases,
                mosmed_studies=mosmed_studies,
                size=size,
                overwrite=overwrite,
                edge_cases=edge_cases,
            )
    except VerseEtlError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    console.print(
        f"sample written to {out} in {time.perf_counter() - start:.1f} s: "
        f"{len(manifest.verse)} VerSe scans, {len(manifest.mosmed)} MosMed studies, "
        f"{len(manifest.files)} files"
    )


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
        Path | None, typer.Option(help="Build output folder (overrides params).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Cases built in parallel.")] = None,
    mosmed_id_mapping: Annotated[
        Path | None,
        typer.Option(
            help="CSV old_folder,old_series_uid,folder,series_uid: lets annotation files with "
            "the older MosMed identifiers match (overrides params mosmed.id_mapping)."
        ),
    ] = None,
) -> None:
    """Run the Prefect build flow: sources -> Zarr stores + Parquet tables."""
    try:
        params = _params(params_file).build
        if verse is not None or mosmed is not None:
            params = replace(
                params,
                sources=SourceParams(
                    verse=str(verse) if verse is not None else "",
                    mosmed=str(mosmed) if mosmed is not None else "",
                ),
            )
        if out is not None:
            params = replace(params, out=str(out))
        if workers is not None:
            params = replace(params, workers=workers)
        if mosmed_id_mapping is not None:
            params = replace(
                params, mosmed=replace(params.mosmed, id_mapping=str(mosmed_id_mapping))
            )
    except VerseEtlError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
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

    from flows.build import BuildFailed, run_build

    start = time.perf_counter()
    try:
        summary = run_build(params)
    except BuildFailed as e:
        console.print(f"[red]build failed:[/red] {e}")
        raise typer.Exit(1) from e
    except VerseEtlError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    seconds = time.perf_counter() - start
    table = Table(title=f"verse-etl build -> {params.out} ({seconds:.1f} s)")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in summary.rows.items():
        table.add_row(name, str(n))
    Console().print(table)
    Console().print(
        f"cases: {summary.cases} ({summary.converted} built, {summary.reused} unchanged); "
        f"stores written: {summary.stores_written}; quarantined records: {summary.quarantined}"
    )


@app.command()
def summary(
    out: Annotated[Path, typer.Argument(help="Build output folder.")] = Path("data/build"),
) -> None:
    """Print what a finished build holds: rows per table, stores and their size, quarantine."""
    from verse_etl.inventory import read_inventory

    try:
        inventory = read_inventory(out)
    except VerseEtlError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
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


def main() -> None:  # pragma: no cover - console entry point
    app()
