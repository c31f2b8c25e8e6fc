"""Fixtures for end-to-end tests that run the CLI in subprocesses."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import background, free_port


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    """A real local `prefect server` on loopback for CLI subprocesses (one start per module).

    Subprocesses pointed at it skip the temporary server each `verse-etl` run would start.
    """
    port = free_port()
    home = tmp_path_factory.mktemp("prefect-server")
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
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
