"""How the suite is spread over pytest-xdist workers (``make test``: ``-n auto --dist loadgroup``).

- **Units.** Tests that share a module-, class- or package-scoped fixture (directly or through
  each other) form one unit that a single worker runs whole, in collection order, so the fixture
  (a Prefect build, a DVC project, a sample) is made once; every other test is a unit alone.
- **Order.** Units go longest first (largest processing time first: the workers finish close
  together instead of one waiting on a long test started last), by ``tests/durations.json``,
  which ``make durations`` records; a test it does not list is guessed by its ``slow`` mark.

xdist's own ``loadgroup`` carries a group by appending ``@group`` to the node id, which pytest 9.2
no longer allows (pytest-dev/pytest-xdist#1386: the groups are silently ignored). Here each
worker writes its units to a file the controller names (``pytest_configure_node``), and the
controller's scheduler (``pytest_xdist_make_scheduler``) reads it once the workers have
collected: the same scheduling as ``loadgroup``, with units as the groups.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

DURATIONS = Path(__file__).with_name("durations.json")
UNKNOWN_SECONDS = 0.5
"""What a test missing from tests/durations.json is expected to take..."""
UNKNOWN_SLOW_SECONDS = 30.0
"""...and one marked ``slow`` (a Prefect or DVC run): a new slow test goes early, not last."""
UNITS_KEY = "verse_etl_units"  # workerinput key: where the workers write their units

_SHARED_SCOPES = {"module": pytest.Module, "class": pytest.Class, "package": pytest.Package}


def configure(config: pytest.Config) -> None:
    """Register the duration recorder and, under xdist's controller, the unit scheduler."""
    path = config.getoption("record_durations", None)
    worker = hasattr(config, "workerinput")
    if path and not worker:
        config.pluginmanager.register(DurationRecorder(Path(path)), "verse-etl-durations")
    if not worker and config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(UnitsController(), "verse-etl-units")


def order_items(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put ``items`` in units, longest unit first; on an xdist worker, write the units down for
    the controller. The order depends on the collection alone, so it is the same on every
    worker (xdist checks that)."""
    seconds = estimated_seconds(items)
    units = work_units(items)
    units.sort(key=lambda unit: -sum(seconds[item.nodeid] for item in unit))
    items[:] = [item for unit in units for item in unit]
    target = getattr(config, "workerinput", {}).get(UNITS_KEY)
    if target:
        named = {
            item.nodeid: f"unit-{number}"
            for number, unit in enumerate(units)
            if len(unit) > 1
            for item in unit
        }
        tmp = Path(f"{target}.{os.getpid()}")
        tmp.write_text(json.dumps(named))
        os.replace(tmp, target)  # every worker writes the same units: any complete copy will do


def estimated_seconds(items: list[pytest.Item]) -> dict[str, float]:
    """Each test's expected seconds: as recorded in tests/durations.json (a test file moved to
    another folder is found by its file name), else a guess by its ``slow`` mark."""
    known = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    by_file_name = {_file_name_id(nodeid): seconds for nodeid, seconds in known.items()}
    estimates = {}
    for item in items:
        guess = UNKNOWN_SLOW_SECONDS if item.get_closest_marker("slow") else UNKNOWN_SECONDS
        seconds = known.get(item.nodeid, by_file_name.get(_file_name_id(item.nodeid)))
        estimates[item.nodeid] = guess if seconds is None else seconds
    return estimates


def _file_name_id(nodeid: str) -> str:
    """``tests/unit/test_x.py::test_y`` -> ``test_x.py::test_y``."""
    path, sep, rest = nodeid.partition("::")
    return path.rsplit("/", 1)[-1] + sep + rest


def _shared_fixtures(item: pytest.Item) -> set[str]:
    """The module-, class- or package-scoped fixtures ``item`` uses, each named with the node it
    is made for (a module fixture is made once per module)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:  # doctests
        return set()
    keys = set()
    for name in item.fixturenames:
        defs = info.name2fixturedefs.get(name)
        kind = _SHARED_SCOPES.get(defs[-1].scope) if defs else None
        node = item.getparent(kind) if kind else None
        if node is not None:
            keys.add(f"{node.nodeid}::{name}")
    return keys


def work_units(items: list[pytest.Item]) -> list[list[pytest.Item]]:
    """``items`` in units (see the module docstring), each in collection order."""
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for index, item in enumerate(items):
        for key in _shared_fixtures(item):
            if key in first:
                parent[find(index)] = find(first[key])
            else:
                first[key] = index
    units: dict[int, list[pytest.Item]] = {}
    for index, item in enumerate(items):
        units.setdefault(find(index), []).append(item)
    return list(units.values())


class DurationRecorder:
    """Adds up each test's seconds (setup, call, teardown) and writes them at the end. Under
    xdist the controller gets every worker's reports, so it alone records."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + report.duration

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        known = json.loads(self.path.read_text()) if self.path.exists() else {}
        known.update({k: round(v, 2) for k, v in self.seconds.items()})
        self.path.write_text(json.dumps(dict(sorted(known.items())), indent=0) + "\n")


class UnitsController:
    """xdist controller side: names the units file for the workers; schedules by units."""

    def __init__(self) -> None:
        # The controller's own temp folder (tests/conftest.py), removed when the session ends.
        self.path = Path(os.environ.get("TMPDIR", "/tmp")) / "verse-etl-units.json"

    def pytest_configure_node(self, node) -> None:
        node.workerinput[UNITS_KEY] = str(self.path)

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log):
        if config.getvalue("dist") != "loadgroup":
            return None
        from xdist.scheduler import LoadScopeScheduling

        path = self.path

        class UnitScheduling(LoadScopeScheduling):
            """``loadgroup`` with the units as groups (read once the workers have collected)."""

            units: dict[str, str] | None = None

            def schedule(self) -> None:
                if self.units is None and path.exists():
                    self.units = json.loads(path.read_text())
                super().schedule()

            def _split_scope(self, nodeid: str) -> str:
                return (self.units or {}).get(nodeid, nodeid)

        # The units arrive longest first: keep that order (xdist would sort by test count).
        config.option.loadscopereorder = False
        return UnitScheduling(config, log)
