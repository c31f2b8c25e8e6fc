"""Prefect flows composing the verse_etl library. The only package that imports Prefect.

Importing it sets safe defaults for a machine without network, unless the caller set them:
Prefect's home inside the working directory (the project), no analytics, a patient start-up
timeout for the temporary local server, and verse_etl's log records captured in run logs.
"""

import os
from pathlib import Path

_DEFAULTS = {
    "PREFECT_HOME": str(Path.cwd() / ".prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "verse_etl",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
}
for _key, _value in _DEFAULTS.items():
    os.environ.setdefault(_key, _value)
