"""Shared fixtures: the real files in ../shared, and one Prefect server per test session.

Under pytest-xdist (``make test``: ``-n auto --dist loadgroup``) each worker is a session of its
own: its own Prefect home, temp folder, Prefect server and S3 server. Tests sharing a module-scoped
fixture are sent to one worker, so it is built once, and the longest work goes first
(tests/scheduling.py, from ``tests/durations.json``).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# Tests are hermetic: a Prefect home of their own (never the developer's profile, database or
# Prefect Cloud login) and no configured API unless a fixture sets one. Set before anything
# imports Prefect. Each xdist worker imports this file itself, so each gets its own home and
# temp folder: the local Prefect server a build starts (flows/server.py keeps it in
# PREFECT_HOME), Dask's scratch space and the object-store work folders (publish.local_root,
# named for the URL only, equal on two workers with S3 servers of their own) never meet.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
for key in ("PREFECT_API_URL", "PREFECT_PROFILE", "PREFECT_API_KEY"):
    os.environ.pop(key, None)
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix=f"verse-etl-tests-prefect-{WORKER}-")
# pytest's own tmp_path folders stay where they were (kept after the run for a look). The
# workers inherit the controller's TMPDIR: theirs go beside it in the system's temp folder, with
# short names (Chromium's socket path under TMPDIR must fit in 108 bytes).
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
os.environ["TMPDIR"] = tempfile.mkdtemp(
    prefix=f"vet-{WORKER}-", dir=os.environ["PYTEST_DEBUG_TEMPROOT"]
)
tempfile.tempdir = None  # gettempdir() reads TMPDIR again
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
    from verse_etl.flows.server import DATABASE, template_database

    from tests.e2e.processes import background, free_port

    home = tmp_path_factory.mktemp("prefect-server")
    # The migrated empty database `make setup` keeps (flows/server.py prepare), as the build's
    # own local server gets it: a start without Prefect's migrations (18.7 -> 10.1 s at load 1).
    if template_database().exists():
        shutil.copyfile(template_database(), home / DATABASE)
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    prefect = str(Path(sys.executable).parent / "prefect")
    # A free port can be taken before the server binds it (by another xdist worker's server):
    # the server then exits at once, and a new port is tried.
    for attempt in range(3):
        port = free_port()
        args = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        with background(args, home / f"server-{attempt}.log", env) as proc:
            api = f"http://127.0.0.1:{port}/api"
            deadline = time.monotonic() + 180
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    if httpx.get(f"{api}/health", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            if proc.poll() is None and time.monotonic() < deadline:
                yield api
                return
        if time.monotonic() >= deadline:
            break
    raise RuntimeError(
        f"prefect server did not start: {(home / f'server-{attempt}.log').read_text()}"
    )


@pytest.fixture(scope="session")
def prefect_server(prefect_api: str):
    """In-process flow runs report to the session's server (as with a configured API)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
        yield prefect_api


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(os.environ["PREFECT_HOME"], ignore_errors=True)
    shutil.rmtree(os.environ["TMPDIR"], ignore_errors=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-durations",
        metavar="PATH",
        help="write each test's seconds (setup + call + teardown) to PATH, as JSON; "
        "tests/durations.json orders the work over xdist workers (longest first)",
    )


def pytest_configure(config: pytest.Config) -> None:
    from tests import scheduling

    scheduling.configure(config)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from tests import scheduling

    scheduling.order_items(config, items)


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
