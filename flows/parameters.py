"""A flow run's parameters as JSON for the Prefect API, without importing fastapi.

Prefect stores the parameters of a flow run (the UI and ``prefect flow-run inspect`` show them)
through fastapi's ``jsonable_encoder`` (``Flow.serialize_parameters``). Importing fastapi builds
its OpenAPI models: 0.3-0.4 s on an idle machine, about 1 s under load, at the first flow run of
every process, a sixth of what Prefect costs a build. The build's parameters are plain values and
frozen dataclasses (:class:`verse_etl.params.BuildParams`), which :func:`to_json` encodes as
``jsonable_encoder`` does (``tests/unit/flows/test_parameters.py`` compares the two); a flow run
given anything else is left to Prefect's own encoder.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
from collections.abc import Callable
from pathlib import PurePath
from typing import Any, TypeVar

F = TypeVar("F")


class NotPlain(TypeError):
    """A value :func:`to_json` does not encode (Prefect's encoder is used instead)."""


def to_json(value: Any) -> Any:
    """``value`` as JSON-compatible values, as fastapi's ``jsonable_encoder`` gives them.

    >>> to_json({"out": PurePath("data/build"), "chunks": (64, 64), "modes": {}})
    {'out': 'data/build', 'chunks': [64, 64], 'modes': {}}

    Raises
    ------
    NotPlain
        For a value other than None, bool, int, float, str, a path, an enum, a dataclass
        instance, a mapping with such keys and values, or a list, tuple or set of them.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return to_json(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {to_json(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v) for v in value]
    raise NotPlain(f"{type(value).__name__} is not a plain value")


def plain_parameters(flow: F, task_runner: object | None = None) -> F:
    """The flow object to run: a copy of ``flow`` (a Prefect flow) that stores its run
    parameters through :func:`to_json`, on ``task_runner`` when one is given.

    A shallow copy, so the flow defined at import is left as it is. Prefect's ``with_options``
    would build the flow again from its function, its parameter schema included (pydantic
    models of :class:`~verse_etl.params.BuildParams`: ~18 ms on every build's critical path
    here); the task runner is all a run changes, and the engine reads it from the flow object
    it is given (``flow.task_runner.duplicate()``).
    """
    run = copy.copy(flow)
    # F is a prefect Flow (kept generic: its type parameters are the caller's).
    default: Callable[[dict[str, Any]], dict[str, Any]] = run.serialize_parameters  # type: ignore[attr-defined]

    def serialize_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
        try:
            return {key: to_json(value) for key, value in parameters.items()}
        except NotPlain:
            return default(parameters)

    # An instance attribute: the engine calls it on this object (flow_engine.create_flow_run).
    run.serialize_parameters = serialize_parameters  # type: ignore[attr-defined]
    if task_runner is not None:
        # the engine runs a duplicate of the runner it finds there (flow_engine.run_context)
        run.task_runner = task_runner  # type: ignore[attr-defined]  # F is a Flow (see above)
    return run
