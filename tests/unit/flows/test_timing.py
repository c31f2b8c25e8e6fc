"""Prefect's cost per command: the parts timed around the flow and the task runs, and the gaps
of the worker thread on the critical path."""

from __future__ import annotations

import time

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
