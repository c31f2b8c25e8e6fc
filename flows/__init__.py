"""Prefect flows composing the verse_etl library. The only package that imports Prefect.

Importing it sets safe defaults for a machine without network, unless the caller set them: no
analytics, a patient start-up timeout for a temporary server, verse_etl's log records captured
in run logs, no search for pydantic plugins, and Dask's INFO chatter left out.
``PREFECT_HOME`` is left alone: the user's home (and its profile, e.g. a Prefect Cloud login or
a team server) is respected; only the local server started when no API is configured keeps its
database in the project (:mod:`flows.server`).
"""

import os
from importlib import import_module
from typing import TYPE_CHECKING, Any

_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "verse_etl",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    # pydantic (Prefect's models) looks for its plugins in every installed distribution's entry
    # points at its first model: ~40 ms of Prefect's import here, and this environment installs
    # none. Set it empty to let pydantic look (e.g. for logfire's plugin).
    "PYDANTIC_DISABLE_PLUGINS": "__all__",
    # Dask (`--runner dask`): its scheduler, nannies and workers log every start, connection
    # and stop at INFO (about 40 lines a build); warnings and errors are what a user needs.
    "DASK_LOGGING__DISTRIBUTED": "warning",
}
for _key, _value in _DEFAULTS.items():
    os.environ.setdefault(_key, _value)

# The command line's one way into the flows: `from verse_etl import flows; flows.run_build(...)`.
# Each name imports its module on first use, so `verse-etl --help` and the commands without
# Prefect stay fast, and a caller may start the Prefect server before the build's imports.
_ENTRY_POINTS: dict[str, tuple[str, str]] = {
    "run_build": ("verse_etl.flows.build", "run_build"),
    "run_ingest": ("verse_etl.flows.stages", "run_ingest"),
    "run_tables": ("verse_etl.flows.stages", "run_tables"),
    "serve_deployment": ("verse_etl.flows.schedule", "serve"),
    "serve_api": ("verse_etl.flows.server", "serve_api"),
    "start_prefect": ("verse_etl.flows.server", "start_prefect"),
}
__all__ = [
    "run_build",
    "run_ingest",
    "run_tables",
    "serve_api",
    "serve_deployment",
    "start_prefect",
]

if TYPE_CHECKING:
    from verse_etl.flows.build import run_build
    from verse_etl.flows.schedule import serve as serve_deployment
    from verse_etl.flows.server import serve_api, start_prefect
    from verse_etl.flows.stages import run_ingest, run_tables


def entry_module(name: str) -> str:
    """The module that defines the entry point ``name``."""
    return _ENTRY_POINTS[name][0]


def __getattr__(name: str) -> Any:
    if name not in _ENTRY_POINTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _ENTRY_POINTS[name]
    return getattr(import_module(module), attribute)
