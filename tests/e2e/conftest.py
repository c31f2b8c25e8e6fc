"""Fixtures for end-to-end tests that run the CLI in subprocesses (the Prefect server fixtures,
``prefect_api`` and ``prefect_server``, are session-wide in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto) on loopback with bucket ``verse-etl``, one per session."""
    from tests.e2e.s3_server import moto_server

    with moto_server() as url:
        yield url
