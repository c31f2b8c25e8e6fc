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
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from schemas import TABLES
from tests.e2e.library_build import build_tiny
from verse_etl.cli import app
from verse_etl.dataset import Dataset
from verse_etl.dictionary import render_dictionary
from verse_etl.paths import table_path

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory):
    src, out = tmp_path_factory.mktemp("consumer-src"), tmp_path_factory.mktemp("consumer-build")
    return out, src, build_tiny(src, out, seed=5)


def test_every_table_reads_the_same_in_duckdb_pandas_polars_and_pyarrow(build) -> None:
    out, *_ = build
    for name, model in TABLES.items():
        path = table_path(out, name)
        by_pandas = pd.read_parquet(path)
        by_polars = pl.read_parquet(path)
        by_arrow = pads.dataset(path, format="parquet").to_table()
        by_duckdb = duckdb.connect().execute(f"SELECT * FROM read_parquet('{path}')").df()
        assert len(by_pandas) == by_polars.height == by_arrow.num_rows == len(by_duckdb), name
        assert (
            list(by_pandas.columns)
            == by_polars.columns
            == by_arrow.column_names
            == list(by_duckdb.columns)
        )
        assert list(by_pandas.columns) == list(model.to_schema().columns)
        if len(by_pandas):
            key = by_pandas.columns[0]
            assert (
                list(by_pandas[key])
                == by_polars[key].to_list()
                == by_arrow[key].to_pylist()
                == list(by_duckdb[key])
            )
        # Plain Arrow types only, and each column's description in the field metadata.
        schema = pq.read_schema(path)
        for field in schema:
            assert field.metadata and field.metadata[b"description"], (name, field.name)
        assert b"pandas" not in (schema.metadata or {}), name


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
        case = ds[scan.scan_id]
        ct = nib.load(str(src / scan.ct))
        np.testing.assert_array_equal(case.image[:, :, 3], np.asanyarray(ct.dataobj)[:, :, 3])
        np.testing.assert_array_equal(
            np.asarray(case.mask),
            np.asanyarray(nib.load(str(src / scan.mask)).dataobj).astype(np.uint8),
        )
        np.testing.assert_allclose(case.affine, ct.affine)
        assert tuple(sorted(case.vertebrae["label"])) == scan.labels
    mosmed = ds[manifest.mosmed[0].series_uid]
    assert mosmed.source == "mosmed" and mosmed.mask is None and len(mosmed.vertebrae) > 0
    assert ds[0].id == ds.ids[0]
    # Picklable, as PyTorch's DataLoader needs for worker processes; nothing volumetric is copied.
    assert len(pickle.dumps(ds)) < 1_000_000
    with pytest.raises(KeyError, match="no case"):
        ds["verse999"]
