"""A rebuild SIGKILLed at every step of publishing leaves readers the whole old dataset or the
whole new one, never a mix: every table, the card, and the store each row points at (its voxels
are those the row's digest names). A rerun then ends exactly where an uninterrupted build ends.

The build runs the library calls ``verse-etl build`` makes (ingest, prune, tables, garbage
collection; no Prefect) in a forked child that SIGKILLs itself at the chosen step."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import xxhash
from verse_etl.schemas import TABLES

from tests.file_digests import file_digests
from verse_etl.cases.outputs import load_case_results, save_case_result
from verse_etl.mosmed.case import build_mosmed_study
from verse_etl.mosmed.case import source_results as mosmed_source_results
from verse_etl.params import BuildParams, SourceParams, VolumeParams
from verse_etl.publish.card import card_path, write_card
from verse_etl.publish.pruning import collect_garbage_after_switch, settle_source
from verse_etl.sources.mosmed import discover_mosmed
from verse_etl.sources.verse import discover_verse_sources
from verse_etl.stores.volumes import read_source_order
from verse_etl.tables.assemble import assemble
from verse_etl.tables.parquet import read_frame
from verse_etl.verse.case import build_verse_scan, source_results

pytestmark = pytest.mark.slow

# Steps after which a rerun is also checked (each rerun costs a build).
RERUN = ("tables-half-written", "garbage-collection")
VOLUMES = VolumeParams(chunks=(16, 16, 16), shard_chunks=(1, 1, 1), pyramid_levels=0)


def _build(verse: Path, mosmed: Path, out: Path) -> None:
    """What ``flows.build.build_dataset`` does, case after case."""
    params = BuildParams(
        out=str(out),
        sources=SourceParams(verse=str(verse), mosmed=str(mosmed)),
        volumes=VOLUMES,
        prune=True,
        prune_max_loss=1.0,
    )
    found = discover_verse_sources(verse)
    scans = [build_verse_scan(s, verse, out, VOLUMES) for s in found.scans]
    derived = source_results(found, verse, scans, out)
    studies = [build_mosmed_study(s, mosmed, out, VOLUMES) for s in discover_mosmed(mosmed)]
    derived_mosmed = mosmed_source_results(mosmed, params.mosmed.annotation_dirs)
    for source, root, mine, extra in (
        ("verse", verse, scans, derived),
        ("mosmed", mosmed, studies, derived_mosmed),
    ):
        for result in extra:
            save_case_result(out, result)
        settle_source(str(out), out, source, str(root), True, mine + extra, True, 1.0)
    assemble(
        load_case_results(out),
        out,
        params.checks,
        before_switch=lambda generation: write_card(generation, params),
    )
    collect_garbage_after_switch(params)


def _kill_at(module: object, name: str, call: int, after: bool = False) -> None:
    """Replace ``module.name`` by a wrapper that SIGKILLs the process at its ``call``-th call
    (before it runs, or right after with ``after``)."""
    original: Callable[..., object] = getattr(module, name)
    calls = [0]

    def wrapper(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        if calls[0] == call and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        value = original(*args, **kwargs)
        if calls[0] == call and after:
            os.kill(os.getpid(), signal.SIGKILL)
        return value

    setattr(module, name, wrapper)


def _steps() -> dict[str, Callable[[], None]]:
    import verse_etl.cases.outputs
    import verse_etl.tables.assemble
    import verse_etl.tables.generations

    return {
        # ingest: the removed scan's result goes; its store (published) must stay
        "ingest-prune": lambda: _kill_at(verse_etl.cases.outputs, "remove_path", 1),
        # every case ingested and pruned, nothing of the tables written yet
        "after-ingest": lambda: _kill_at(verse_etl.tables.assemble, "remove_stale_generations", 1),
        "tables-half-written": lambda: _kill_at(verse_etl.tables.assemble, "write_table", 3),
        "before-exchange": lambda: _kill_at(verse_etl.tables.generations, "exchange", 1),
        "after-exchange": lambda: _kill_at(verse_etl.tables.generations, "exchange", 1, after=True),
        "before-metrics": lambda: _kill_at(verse_etl.tables.assemble, "write_text_atomic", 1),
        # the first deletion is the old generation folder, the second the first old store
        "garbage-collection": lambda: _kill_at(verse_etl.tables.generations, "remove_path", 2),
    }


def _killed_build(verse: Path, mosmed: Path, out: Path, step: str) -> None:
    pid = os.fork()
    if pid == 0:  # the child: a real process, killed for real
        try:
            _steps()[step]()
            _build(verse, mosmed, out)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 300  # a child stuck on a lock inherited from a thread
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"{step}: the forked build did not reach its kill point in 300 s")
        time.sleep(0.05)
    status = done[1]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (step, status)


def _f_xxh3(volume: np.ndarray) -> str:
    return xxhash.xxh3_128_hexdigest(np.asfortranarray(volume).reshape(-1, order="F").tobytes())


def _visible(out: Path) -> tuple[dict[str, object], str]:
    """What a reader sees: every table and the card; checks each row's store holds its voxels."""
    frames = {name: read_frame(out, name) for name in TABLES}
    for table, digest in (("scans", "ct_voxel_xxh3"), ("series", "voxel_xxh3")):
        for _, row in frames[table].dropna(subset=["store_path"]).iterrows():
            # the tables' digests are of the source's voxel order (the store holds it turned)
            voxels = read_source_order(out / row["store_path"])
            assert _f_xxh3(voxels) == row[digest], row["store_path"]
    return frames, card_path(out).read_text()


def _same(seen: tuple[dict, str], expected: tuple[dict, str]) -> bool:
    frames, card = seen
    return card == expected[1] and all(frames[n].equals(expected[0][n]) for n in TABLES)


@pytest.fixture(scope="module")
def generations(tmp_path_factory: pytest.TempPathFactory):
    """Sources v1 and v2 (one CT changed, one scan removed), v1 built, and v2 built on it."""
    from verse_etl_sample import write_sample

    base = tmp_path_factory.mktemp("generations")
    manifest = write_sample(base / "v1", seed=4, verse_cases=4, mosmed_studies=1, size="tiny")
    v1, v2 = base / "v1", base / "v2"
    shutil.copytree(v1, v2)
    removed = next(s for s in manifest.verse if (v1 / s.ct).parent.name == f"sub-{s.scan_id}")
    for path in (v2 / "verse").rglob(f"sub-{removed.scan_id}*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    changed = next(s for s in manifest.verse if s.scan_id != removed.scan_id)
    image = nib.load(v2 / changed.ct)
    data = np.asanyarray(image.dataobj).copy()
    data[0, 0, 0] += 7
    nib.save(nib.Nifti1Image(data, image.affine, image.header), v2 / changed.ct)

    old = base / "old"
    _build(v1 / "verse", v1 / "mosmed", old)
    new = base / "new"
    shutil.copytree(old, new)
    _build(v2 / "verse", v2 / "mosmed", new)
    seen_old, seen_new = _visible(old), _visible(new)
    assert not _same(seen_old, seen_new)
    assert seen_new[0]["scans"].shape[0] == seen_old[0]["scans"].shape[0] - 1
    return v2, old, new, seen_old, seen_new


@pytest.mark.parametrize("step", list(_steps()))
def test_a_kill_at_any_step_shows_the_old_or_the_new_dataset(
    generations, step: str, tmp_path: Path
) -> None:
    v2, old, new, seen_old, seen_new = generations
    out = tmp_path / "out"
    shutil.copytree(old, out)
    _killed_build(v2 / "verse", v2 / "mosmed", out, step)
    seen = _visible(out)
    expected_new = step in ("after-exchange", "before-metrics", "garbage-collection")
    assert _same(seen, seen_new if expected_new else seen_old), step

    if step not in RERUN:
        return
    _build(v2 / "verse", v2 / "mosmed", out)  # the rerun finishes the job
    assert _same(_visible(out), seen_new)
    assert file_digests(out / "tables") == file_digests(new / "tables")
    assert file_digests(out / "volumes") == file_digests(new / "volumes")  # no old store left
    assert not list(out.glob(".generation-*"))
