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
