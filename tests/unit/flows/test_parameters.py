"""A flow run's parameters are stored as Prefect's own encoder stores them, without its import of
fastapi (0.3-1 s at the first flow run of each process)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.encoders import jsonable_encoder
from verse_etl.flows.parameters import NotPlain, to_json

from verse_etl.params import BuildParams, CheckParams, SourceParams


def test_build_params_encode_as_prefects_encoder_does() -> None:
    params = replace(
        BuildParams(),
        sources=SourceParams(verse="raw/verse", mosmed=""),
        checks=CheckParams(modes={"mask_integral": "raise"}),
    )
    value = {"params": params, "sources": ("verse", "mosmed"), "root": Path("a/b"), "n": None}
    assert to_json(value) == jsonable_encoder(value)
    with pytest.raises(NotPlain):
        to_json({"f": object()})


def test_a_flow_stores_its_parameters_without_importing_fastapi() -> None:
    code = (
        "import sys\n"
        "from prefect import flow\n"
        "from verse_etl.flows.parameters import plain_parameters\n"
        "from verse_etl.params import BuildParams\n"
        "@flow\n"
        "def f(params, sources): ...\n"
        "g = plain_parameters(f)\n"
        "stored = g.serialize_parameters({'params': BuildParams(), 'sources': ('verse',)})\n"
        "assert stored['sources'] == ['verse'] and stored['params']['out'] == 'data/build'\n"
        "assert 'fastapi' not in sys.modules, 'fastapi imported'\n"
        "other = g.serialize_parameters({'params': object()})\n"  # left to Prefect's encoder
        "assert 'fastapi' in sys.modules and other['params'].startswith('<object'), other\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_the_flow_run_is_a_copy_on_the_given_task_runner(prefect_server: str) -> None:
    from prefect import flow
    from prefect.context import FlowRunContext
    from prefect.task_runners import ThreadPoolTaskRunner
    from verse_etl.flows.parameters import plain_parameters

    @flow(validate_parameters=False)
    def workers(params: BuildParams) -> tuple[bool, str]:
        context = FlowRunContext.get()
        assert context is not None and context.flow_run is not None
        # The engine runs a duplicate of the flow's runner: equal when it has the same threads.
        three = context.task_runner == ThreadPoolTaskRunner(max_workers=3)
        return three, context.flow_run.parameters["params"]["out"]

    run = plain_parameters(workers, ThreadPoolTaskRunner(max_workers=3))
    assert run(BuildParams(out="elsewhere")) == (True, "elsewhere")
    # The flow defined at import is left as it was: its own runner, Prefect's own encoder.
    assert workers.task_runner is not run.task_runner
    assert "serialize_parameters" not in vars(workers)
    assert plain_parameters(workers).task_runner is workers.task_runner
