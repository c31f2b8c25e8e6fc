"""A command's heavy imports without the cyclic garbage collector, then frozen."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from verse_etl.importing import imports_without_collector


@pytest.fixture
def collector():
    """The collector as it was, and nothing left frozen, after the test."""
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    (gc.enable if enabled else gc.disable)()


def test_paused_inside_then_on_with_what_was_made_frozen(collector: None) -> None:
    gc.enable()
    gc.unfreeze()
    with imports_without_collector():
        assert not gc.isenabled()
        made = [[i] for i in range(1000)]  # containers the collector tracks
    assert gc.isenabled() and gc.get_freeze_count() >= len(made)


def test_on_again_when_the_imports_fail(collector: None) -> None:
    gc.enable()
    with pytest.raises(ImportError), imports_without_collector():
        import verse_etl_no_such_module  # type: ignore[import-not-found]  # noqa: F401
    assert gc.isenabled()


def test_left_off_if_it_was_off(collector: None) -> None:
    gc.disable()
    gc.unfreeze()
    with imports_without_collector():
        [[i] for i in range(100)]
    assert not gc.isenabled() and gc.get_freeze_count() == 0


def test_the_build_imports_no_module_that_counts_its_objects_at_exit() -> None:
    # duckdb's extension (nanobind) counts its objects at exit: imported inside the block, its
    # frozen objects were reported as leaks, a screen of "leaked function" lines per build.
    # The build's imports leave it out; opening a catalog (the report does) imports it after.
    code = (
        "import sys\n"
        "from verse_etl.importing import imports_without_collector\n"
        "with imports_without_collector():\n"
        "    import verse_etl.flows.build\n"
        "assert 'duckdb' not in sys.modules, 'duckdb imported with the build'\n"
        "import duckdb\n"
        "duckdb.sql('select 1').fetchall()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and "leak" not in done.stderr, done.stderr


def test_a_leak_counting_module_imported_inside_would_be_seen() -> None:
    # What the test above guards against, shown to be visible.
    code = (
        "from verse_etl.importing import imports_without_collector\n"
        "with imports_without_collector():\n"
        "    import duckdb\n"
        "duckdb.sql('select 1').fetchall()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "leak" in done.stderr, done.stderr
