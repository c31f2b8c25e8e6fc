"""Prefect flows composing the verse_etl library. The only package that imports Prefect.

Importing it sets safe defaults for a machine without network, unless the caller set them: no
analytics, a patient start-up timeout for a temporary server, verse_etl's log records captured
in run logs, and Dask's INFO chatter left out. ``PREFECT_HOME`` is left alone: the user's home (and its profile, e.g. a Prefect
Cloud login or a team server) is respected; only the local server started when no API is
configured keeps its database in the project (:mod:`flows.server`).
"""

import os

_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "verse_etl",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    # Dask (`--runner dask`): its scheduler, nannies and workers log every start, connection
    # and stop at INFO (about 40 lines a build); warnings and errors are what a user needs.
    "DASK_LOGGING__DISTRIBUTED": "warning",
}
for _key, _value in _DEFAULTS.items():
    os.environ.setdefault(_key, _value)
