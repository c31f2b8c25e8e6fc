"""Shared fixtures: the real files in ../shared, and one Prefect server per test session."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# Tests are hermetic: a Prefect home of their own (never the developer's profile, database or
# Prefect Cloud login) and no configured API unless a fixture sets one. Set before anything
# imports Prefect.
for key in ("PREFECT_API_URL", "PREFECT_PROFILE", "PREFECT_API_KEY"):
    os.environ.pop(key, None)
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="verse-etl-tests-prefect-")
for key, value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    # A local server started by a test's build outlives it by this much (flows/server.py).
    "VERSE_ETL_PREFECT_IDLE_SECONDS": "60",
}.items():
    os.environ.setdefault(key, value)


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ../shared folder. CI always has it, so its absence is an error, not a skip."""
    if not (SHARED / "fixtures").is_dir():
        pytest.fail(f"{SHARED}: real fixtures not found; clone the project beside ../shared")
    return SHARED


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    """A real `prefect server` on loopback (SQLite) for the whole session: the API a user
    configures (PREFECT_API_URL). In-process flow runs (:func:`prefect_server`) and CLI
    subprocesses given this URL share it instead of starting servers of their own."""
    import httpx

    from tests.e2e.processes import background, free_port

    port = free_port()
    home = tmp_path_factory.mktemp("prefect-server")
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    prefect = str(Path(sys.executable).parent / "prefect")
    args = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with background(args, home / "server.log", env) as proc:
        api = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"prefect server did not start: {(home / 'server.log').read_text()}"
                )
            time.sleep(0.5)
        yield api


@pytest.fixture(scope="session")
def prefect_server(prefect_api: str):
    """In-process flow runs report to the session's server (as with a configured API)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
        yield prefect_api


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    import shutil

    shutil.rmtree(os.environ["PREFECT_HOME"], ignore_errors=True)


@pytest.fixture(scope="session")
def catalog_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic sample (4 VerSe scans, 2 MosMed studies): the stand-ins' content."""
    from verse_etl_sample import write_sample

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
