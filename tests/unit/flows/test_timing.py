"""Prefect's cost per command: the parts timed around the flow and the task runs, and the gaps
of the worker thread on the critical path."""

from __future__ import annotations

import time

import pytest
from verse_etl.flows.timing import LINE_PREFIX, PrefectCost


def test_task_runs_are_the_gaps_of_the_thread_that_finished_last() -> None:
    cost = PrefectCost(submitted=10.0, collected=20.0)
    # Thread 1: bodies 10.5-14 and 14.5-19.5 (ends last): gaps 0.5 + 0.5 + 0.5 to collection.
    # Thread 2: one body 11-12, then idle: its gaps overlap thread 1 and do not count.
    cost.spans = [(1, 10.5, 14.0), (2, 11.0, 12.0), (1, 14.5, 19.5)]
    assert abs(cost.task_runs() - 1.5) < 1e-9


def test_a_body_is_taken_back_from_the_part_timed_around_its_call() -> None:
    cost = PrefectCost()
    with cost.part("flow run"):
        time.sleep(0.02)  # the engine before the body
        with cost.body("flow run"):
            time.sleep(0.2)  # the library's work
    assert 0.015 < cost.parts["flow run"] < 0.15
    line = cost.line("tables", wall=2.0)
    assert line.startswith(f"{LINE_PREFIX} tables: ") and "of 2.00 s" in line and "flow run" in line


def test_a_command_without_tasks_lists_no_task_runs() -> None:
    # `make run`'s server start step: its line names what it spent, nothing else.
    cost = PrefectCost()
    cost.add("server", 0.08)
    assert cost.line("server start", 0.08).endswith("(100%; server 0.08)")
    cost.spans = [(1, 1.0, 2.0)]
    assert "task runs" in cost.line("build", 1.0)


def test_no_cases_timed_means_no_task_run_gaps() -> None:
    # Cases on Dask workers (other processes) leave no spans here: nothing is made up.
    assert PrefectCost(submitted=1.0, collected=9.0).task_runs() == 0.0


def test_a_new_run_forgets_the_previous_flow_but_keeps_the_import() -> None:
    cost = PrefectCost(submitted=1.0, collected=9.0)
    cost.spans = [(1, 2.0, 3.0)]
    cost.add("import", 2.0)
    cost.add("server", 0.5)
    cost.add("flow run", 1.0)
    cost.new_run()
    assert dict(cost.parts) == {"import": 2.0} and cost.task_runs() == 0.0


def test_process_seconds_agree_with_a_clock_outside_the_process() -> None:
    # The cost line's wall time: psutil's create_time was up to a second off (a boot time in
    # whole seconds); the time since the process started must match what its parent measured.
    import subprocess
    import sys

    start = time.perf_counter()
    code = (
        "import time; time.sleep(0.5)\n"
        "from verse_etl.flows.timing import process_seconds\n"
        "print(process_seconds())\n"
    )
    inside = float(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
    )
    outside = time.perf_counter() - start
    assert 0.5 <= inside <= outside + 0.02, (inside, outside)
    assert outside - inside < 0.25, (inside, outside)  # the parent's spawn and the child's exit


@pytest.mark.parametrize("module", ["verse_etl.flows.build", "verse_etl.flows.stages"])
def test_the_library_of_a_flow_module_is_imported_before_prefect_and_whole(module: str) -> None:
    # Prefect's import is timed after the library's, as what it adds (the modules both use count
    # as the library's): the library comes without Prefect, and the flow module imported after
    # it brings no library module the scan missed.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from verse_etl.flows.timing import import_library\n"
        f"import_library({module!r})\n"
        "assert 'prefect' not in sys.modules, 'Prefect imported with the library'\n"
        "def library():\n"
        "    return {m for m in sys.modules\n"
        "            if m.startswith('verse_etl.') and not m.startswith('verse_etl.flows')}\n"
        "before = library()\n"
        f"import {module}\n"
        "print(len(before), sorted(library() - before))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    count, missed = done.stdout.split(" ", 1)
    assert int(count) > 30 and missed.strip() == "[]", done.stdout


def test_the_library_scan_follows_flows_modules() -> None:
    # A flows module is read, not imported (it imports Prefect); what it imports from the
    # library is found through it.
    from verse_etl.flows.timing import _library_imports

    found = dict(_library_imports("verse_etl.flows.stages", seen=set()))
    assert "verse_etl.params" in found  # stages' own
    assert "verse_etl.verse.case" in found  # through verse_etl.flows.build
    assert not any(name.startswith("verse_etl.flows") for name in found)


def test_run_logs_made_in_a_body_are_counted_as_prefect_once() -> None:
    # Prefect's API log handler works in the logging thread (~1 ms a record): in a flow's body
    # that is Prefect's time inside the library's, counted as its "logs" part; around the body
    # it is inside the part timed there already, and not counted twice.
    import logging

    from prefect.logging.handlers import APILogHandler
    from verse_etl.flows.timing import COST, import_prefect

    import_prefect()
    (handler,) = {
        h for h in logging.getLogger("prefect.flow_runs").handlers if isinstance(h, APILogHandler)
    }
    record = logging.LogRecord("prefect.flow_runs", logging.INFO, __file__, 1, "x", None, None)
    record.send_to_api = False  # handled, not sent: no run needed

    def logs() -> float:
        return COST.parts.get("logs", 0.0)

    before = logs()
    handler.emit(record)
    assert logs() == before
    with COST.part("flow run"), COST.body("flow run"):
        for _ in range(3):
            handler.emit(record)
    assert logs() > before
