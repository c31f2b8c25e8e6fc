"""Shared fixtures: the real files in ../shared, and one Prefect server per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# Same defaults as `make` sets, for a bare `pytest` run too (before anything imports Prefect).
for key, value in {
    "PREFECT_HOME": str(ROOT / ".prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}.items():
    os.environ.setdefault(key, value)


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ../shared folder. CI always has it, so its absence is an error, not a skip."""
    if not (SHARED / "fixtures").is_dir():
        pytest.fail(f"{SHARED}: real fixtures not found; clone the project beside ../shared")
    return SHARED


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server (real API, SQLite) for every flow run in the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def catalog_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic sample (4 VerSe scans, 2 MosMed studies): the stand-ins' content."""
    from verse_etl.sample import write_sample

    out = tmp_path_factory.mktemp("catalog-sample")
    write_sample(out, seed=3, verse_cases=4, mosmed_studies=2, size="tiny")
    return out


@pytest.fixture(scope="session")
def catalog_mirror(catalog_sample: Path):
    """A loopback HTTP server (ETags, Range, If-Range) serving a stand-in for every entry of
    the source catalog under /<host>/<path>; tests point `fetch` at it with its base URL."""
    from tests.http_server import Served, serve
    from tests.source_standins import standin_files

    with serve(Served(files=standin_files(catalog_sample))) as served:
        yield served
