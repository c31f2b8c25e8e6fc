"""What consumers touch: the Parquet in four readers, the catalog, the dictionary, the card, and
the Python reader over a built dataset."""

from __future__ import annotations

import pickle
from pathlib import Path

import duckdb
import nibabel as nib
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner
from verse_etl.schemas import PARTITION_BY, SORT_KEYS, TABLES

from verse_etl.cli import app
from verse_etl.dataset import Dataset
from verse_etl.read.catalog import connect
from verse_etl.tables.dictionary import render_dictionary, render_readme_tables
from verse_etl.tables.parquet import read_table

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def build(tiny_build):
    return tiny_build


def test_every_table_reads_the_same_in_duckdb_pandas_polars_and_pyarrow(build) -> None:
    out, *_ = build
    for name, model in TABLES.items():
        folder = out / "tables" / name
        files = f"{folder}/*/*/*.parquet"
        by_pandas = pd.read_parquet(folder)
        by_polars = pl.read_parquet(files, hive_partitioning=True)
        by_arrow = pads.dataset(folder, format="parquet", partitioning="hive").to_table()
        by_duckdb = duckdb.sql(
            f"SELECT * FROM read_parquet('{files}', hive_partitioning=true)"
        ).df()
        assert len(by_pandas) == by_polars.height == by_arrow.num_rows == len(by_duckdb), name
        contract = list(model.to_schema().columns)
        assert list(by_pandas.columns) == by_polars.columns == by_arrow.column_names == contract
        assert sorted(by_duckdb.columns) == sorted(contract), name  # DuckDB orders keys itself
        # The same rows (keys and partition) from each reader; Arrow tables in between.
        cols = list(dict.fromkeys([*SORT_KEYS[name], *PARTITION_BY]))
        same = [
            pa.Table.from_pandas(by_pandas[cols].astype(str), preserve_index=False),
            by_polars.select(cols).cast(pl.String).to_arrow(),
            by_arrow.select(cols).cast(pa.schema([(c, pa.string()) for c in cols])),
            pa.Table.from_pandas(by_duckdb[cols].astype(str), preserve_index=False),
        ]
        order = [(c, "ascending") for c in cols]
        rows = [t.cast(same[2].schema).sort_by(order).to_pylist() for t in same]
        assert rows[0] == rows[1] == rows[2] == rows[3], name
        # Plain Arrow types only, and each column's description in the field metadata.
        for path in sorted(folder.glob("*/*/*.parquet")):
            schema = pq.read_schema(path)
            for field in schema:
                assert field.metadata and field.metadata[b"description"], (name, field.name)
            assert b"pandas" not in (schema.metadata or {}), name
            # The partition keys live in the folder names only.
            assert not set(PARTITION_BY) & set(schema.names), path


def test_tables_are_hive_partitioned_by_source_and_release(build) -> None:
    out, _, manifest = build
    scans = sorted((out / "tables" / "scans").glob("source=*/release=*/part-0.parquet"))
    releases = sorted({s.release for s in manifest.verse})
    assert [p.parent.relative_to(out / "tables" / "scans").as_posix() for p in scans] == [
        f"source=verse/release={r}" for r in releases
    ]
    for path in scans:
        release = path.parent.name.removeprefix("release=")
        ids = pq.read_table(path, columns=["scan_id"]).column("scan_id").to_pylist()
        assert sorted(ids) == sorted(s.scan_id for s in manifest.verse if s.release == release)
    # The same split for the rows of each scan, and for the annotation releases of MosMed.
    vertebrae = read_table(out, "vertebrae").to_pandas()
    scan_release = {s.scan_id: s.release for s in manifest.verse}
    assert (vertebrae["release"] == vertebrae["scan_id"].map(scan_release)).all()
    keypoints = sorted((out / "tables" / "mosmed_vertebrae").glob("source=mosmed/release=*"))
    assert [p.name for p in keypoints] == ["release=v1", "release=v2"]
    # A filter on a partition key selects files by their path, before reading any of them.
    dataset = pads.dataset(out / "tables" / "scans", format="parquet", partitioning="hive")
    chosen = list(dataset.get_fragments(filter=pads.field("release") == releases[0]))
    assert [Path(f.path).parent.name for f in chosen] == [f"release={releases[0]}"]
    # Through the library reader the partition keys are plain strings with their descriptions.
    table = read_table(out, "scans")
    assert table.schema.field("release").type == "string"
    assert b"Hive partition key" in table.schema.field("release").metadata[b"description"]


def test_query_command_over_the_catalog(build) -> None:
    out, _, manifest = build
    result = CliRunner().invoke(
        app, ["query", "SELECT count(*) AS n FROM scans", "--out", str(out), "--format", "csv"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["n", str(len(manifest.verse))]
    bad = CliRunner().invoke(app, ["query", "SELECT nope FROM scans", "--out", str(out)])
    assert bad.exit_code == 2 and "query failed" in bad.output


def test_data_dictionary_cannot_drift_from_the_contracts() -> None:
    committed = (ROOT / "docs" / "data-dictionary.md").read_text()
    assert committed == render_dictionary(TABLES), (
        "run `verse-etl dictionary` and commit the result"
    )
    for name, model in TABLES.items():
        assert f"## `{name}`" in committed
        for column in model.to_schema().columns:
            assert f"| `{column}` |" in committed
    assert render_readme_tables(TABLES) in (ROOT / "README.md").read_text(), (
        "run `verse-etl dictionary` and commit README.md"
    )


def test_no_column_is_a_reserved_word_and_sql_needs_no_quotes(build) -> None:
    out, *_ = build
    reserved = {
        row[0]
        for row in duckdb.sql(
            "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category = 'reserved'"
        ).fetchall()
    }
    con = connect(out)
    try:
        for name, model in TABLES.items():
            columns = list(model.to_schema().columns)
            assert not reserved & {name, *columns}, name
            # Every column unquoted in SELECT, GROUP BY and ORDER BY parses and runs.
            listed = ", ".join(columns)
            con.execute(f"SELECT {listed} FROM {name} GROUP BY {listed} ORDER BY {listed}")
        con.execute("SELECT check_name, count(*) FROM quarantine GROUP BY check_name")
    finally:
        con.close()


def test_views_carry_the_contracts_descriptions_as_comments(build) -> None:
    out, *_ = build
    con = connect(out)
    try:
        views = dict(
            con.execute(
                "SELECT view_name, comment FROM duckdb_views() WHERE NOT internal"
            ).fetchall()
        )
        columns = {
            (t, c): comment
            for t, c, comment in con.execute(
                "SELECT table_name, column_name, comment FROM duckdb_columns()"
            ).fetchall()
        }
    finally:
        con.close()
    for name, model in TABLES.items():
        assert views[name] == model.Config.description, name
        for column, spec in model.to_schema().columns.items():
            assert spec.description and columns[(name, column)] == spec.description, (name, column)


def test_dataset_card_carries_counts_licences_and_citations(build) -> None:
    out, _, manifest = build
    card = (out / "tables" / "DATASET_CARD.md").read_text()
    assert f"| scans | {len(manifest.verse)} |" in card
    assert "CC BY-SA 4.0" in card and "Sekuboyina" in card
    assert "CC BY-NC 4.0" in card and "Pisov" in card and "no commercial use" in card


def test_python_reader_gives_lazy_volumes_affines_and_rows(build) -> None:
    out, src, manifest = build
    ds = Dataset(out)
    scan_ids = sorted(s.scan_id for s in manifest.verse)
    assert sorted(ds.ids[: len(scan_ids)]) == scan_ids
    assert len(ds) == len(scan_ids) + 2 * len(manifest.mosmed)
    for scan in manifest.verse:
        case = ds.case(scan.scan_id)
        ct = nib.load(str(src / scan.ct))
        # Store frame (superior, posterior, left); Case.frame leads back to the source's order.
        source = case.frame.to_source(case.image[...])
        np.testing.assert_array_equal(source[:, :, 3], np.asanyarray(ct.dataobj)[:, :, 3])
        np.testing.assert_array_equal(
            case.frame.to_source(np.asarray(case.mask)),
            np.asanyarray(nib.load(str(src / scan.mask)).dataobj).astype(np.uint8),
        )
        np.testing.assert_array_equal(case.source_affine, ct.affine)
        np.testing.assert_allclose(case.affine, case.source_affine @ case.frame.index_matrix())
        assert tuple(sorted(case.vertebrae["label"])) == scan.labels
    mosmed = ds.case(manifest.mosmed[0].series_uid)
    assert mosmed.source == "mosmed" and mosmed.mask is None and len(mosmed.vertebrae) > 0
    assert ds.case(0).id == ds[0]["id"] == ds.ids[0]
    # Picklable, as PyTorch's DataLoader needs for worker processes; nothing volumetric is copied.
    assert len(pickle.dumps(ds)) < 1_000_000
    with pytest.raises(KeyError, match="no case"):
        ds.case("verse999")
