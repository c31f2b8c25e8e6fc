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


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory: pytest.TempPathFactory):
    """One tiny sample (seed 5) built through the library, shared read-only by the consumer-side
    tests of the session: ``(out, src, manifest)``. Tests must not change it."""
    from tests.e2e.library_build import build_tiny

    src, out = tmp_path_factory.mktemp("consumer-src"), tmp_path_factory.mktemp("consumer-build")
    return out, src, build_tiny(src, out, seed=5)
