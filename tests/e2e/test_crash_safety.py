"""SIGKILL a build at several points: nothing partial is ever at a final path, and a rerun ends
with outputs identical to an uninterrupted build. Two builds at once: the second refuses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import zarr

from tests.e2e.dvc_project import ROOT
from tests.file_digests import file_digests

pytestmark = pytest.mark.slow

BUILD_PARTS = ("tables", "volumes")  # the outputs a rerun must reproduce byte for byte


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from verse_etl_sample import write_sample

    src = tmp_path_factory.mktemp("crash-src")
    write_sample(src, seed=7, verse_cases=6, mosmed_studies=2, size="small")
    return src


def _env(api: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": api, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def _build_cmd(src: Path, out: Path, *extra: str) -> list[str]:
    return [
        str(Path(sys.executable).parent / "verse-etl"),
        "build",
        "--verse",
        str(src / "verse"),
        "--mosmed",
        str(src / "mosmed"),
        "--out",
        str(out),
        "--workers",
        "2",
        *extra,
    ]


def _assert_nothing_partial(out: Path) -> None:
    """Every store and table at a final path is complete and readable."""
    volumes = out / "volumes"
    stores = [p for pattern in ("verse/*.zarr", "mosmed/*/*.zarr") for p in volumes.glob(pattern)]
    for store in stores:
        group = zarr.open_group(store, mode="r")
        for _, array in group.arrays():
            array[...]  # every chunk present and decodable
        assert "verse_etl" in group.attrs, store
    # A table folder at its final path is complete: every partition readable, no stray files.
    for folder in sorted((out / "tables").iterdir()) if (out / "tables").exists() else []:
        if folder.is_dir() and not folder.name.startswith("."):
            files = sorted(folder.rglob("*"))
            parquet = [p for p in files if p.is_file()]
            assert parquet and all(p.match("source=*/release=*/part-0.parquet") for p in parquet)
            for table in parquet:
                pq.read_table(table)


@pytest.fixture(scope="module")
def reference(
    sources: Path, prefect_api: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    out = tmp_path_factory.mktemp("reference")
    proc = subprocess.run(
        _build_cmd(sources, out), env=_env(prefect_api), capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return file_digests(out, BUILD_PARTS)


def _first(pattern: str) -> Callable[[Path], bool]:
    return lambda out: any(out.glob(pattern))


KILL_POINTS = {
    # a VerSe store being written (its temporary folder exists)
    "store-mid-write": _first("volumes/verse/*.zarr.tmp-*"),
    # some VerSe cases done, others not
    "between-cases": lambda out: len(list(out.glob("cases/verse/*.json"))) >= 2,
    # MosMed series being written
    "mosmed-mid-write": _first("volumes/mosmed/*/*.zarr.tmp-*"),
    # tables being written (into the next generation, switched in when complete)
    "tables": _first(".generation-*/tables/*"),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_then_rerun_equals_uninterrupted(
    point: str, sources: Path, prefect_api: str, reference: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "build"
    proc = subprocess.Popen(
        _build_cmd(sources, out),
        env=_env(prefect_api),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    killed = False
    while proc.poll() is None and time.monotonic() < deadline:
        if out.exists() and KILL_POINTS[point](out):
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.002)
    proc.wait()
    assert killed, f"the build finished before reaching {point}"
    _assert_nothing_partial(out)
    assert (
        file_digests(out, BUILD_PARTS) != reference or point == "tables"
    )  # it really was cut short

    rerun = subprocess.run(
        _build_cmd(sources, out), env=_env(prefect_api), capture_output=True, text=True, timeout=900
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert file_digests(out, BUILD_PARTS) == reference
    assert not list(out.rglob("*.tmp-*")) and not list(out.rglob("*.old-*"))
    assert not list(out.glob(".generation-*"))


def test_second_concurrent_build_refuses_and_first_is_intact(
    sources: Path, prefect_api: str, reference: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "build"
    first = subprocess.Popen(
        _build_cmd(sources, out),
        env=_env(prefect_api),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lock = out / ".verse-etl.lock"
    deadline = time.monotonic() + 120
    while (
        not (lock.exists() and lock.read_text().startswith("pid")) and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    # Freeze the first build while it holds the lock, so that the second surely meets it.
    first.send_signal(signal.SIGSTOP)
    try:
        second = subprocess.run(
            _build_cmd(sources, out),
            env=_env(prefect_api),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 3, second.stdout + second.stderr
    assert "another build is running on this workspace" in second.stdout + second.stderr
    output, _ = first.communicate(timeout=900)
    assert first.returncode == 0, output
    assert file_digests(out, BUILD_PARTS) == reference
    # With --wait the second one queues behind the first and then finds nothing to do.
    waited = subprocess.run(
        _build_cmd(sources, out, "--wait", "600"),
        env=_env(prefect_api),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert waited.returncode == 0 and "0 built" in waited.stdout, waited.stdout + waited.stderr
