"""The ingest's progress artifact in the Prefect UI, updated without holding up the flow.

Prefect's ``update_progress_artifact`` opens a new API client for every call: 30-60 ms each on
this machine, paid in the flow's thread after every case (0.3-0.5 s of an 8-case sample build).
:class:`ProgressArtifact` instead creates the artifact and sends its updates from a thread of
its own, through the flow run's client (the thread runs in a copy of the flow's context, so the
artifact belongs to the flow run): the flow hands it the latest percentage and goes on, and
does not wait for the creation either (20-40 ms). Updates that arrive while one is being sent,
or before the artifact exists, are merged into the newest (the artifact shows a percentage, not
a history); the last one is always sent before the block ends, so a finished ingest shows 100%.
Prefect's cost line counts the wait for the last update (:mod:`verse_etl.flows.timing`).

A failed creation or update is logged and the build goes on: the artifact is a view of the
progress, the cases and tables are the build.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from types import TracebackType
from typing import Any
from uuid import UUID

from prefect.artifacts import create_progress_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactUpdate
from verse_etl.flows import timing

_LOG = logging.getLogger(__name__)


class ProgressArtifact:
    """A progress artifact of the current flow run, updated from a sender thread (see the
    module docstring). Use as a context manager; :meth:`update` from the flow's thread."""

    def __init__(self, key: str, description: str) -> None:
        self.key, self.description = key, description
        self.id: UUID | None = None
        self._pending: float | None = None
        self._closing = False
        self._wake = threading.Condition()
        self._sender: threading.Thread | None = None
        self.sent = 0  # updates sent (merged ones are not)

    def __enter__(self) -> ProgressArtifact:
        # The sender runs in a copy of this context: the flow run (the artifact is its own), its
        # API client and Prefect settings.
        context = contextvars.copy_context()
        self._sender = threading.Thread(
            target=context.run, args=(self._send_updates,), name="progress-artifact", daemon=True
        )
        self._sender.start()
        return self

    def update(self, percent: float) -> None:
        """Show ``percent`` (0-100) as soon as the sender is free."""
        with self._wake:
            self._pending = percent
            self._wake.notify()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._sender is not None:
            with timing.COST.part("artifacts"):  # the flow waits for the last update
                self._sender.join()

    def _send_updates(self) -> None:
        try:
            # Not in a coroutine: Prefect's async_dispatch runs the sync function (the id back).
            created: Any = create_progress_artifact(0.0, key=self.key, description=self.description)
        except Exception as e:  # a view of the progress: never fails the build
            _LOG.warning("progress artifact %s: not created (%s)", self.key, e)
            return
        artifact = self.id = created
        with get_client(sync_client=True) as client:
            while True:
                with self._wake:
                    while self._pending is None and not self._closing:
                        self._wake.wait()
                    percent, self._pending = self._pending, None
                    if percent is None:  # closing, and nothing left to send
                        return
                try:
                    client.update_artifact(
                        artifact_id=artifact, artifact=ArtifactUpdate(data=percent)
                    )
                    self.sent += 1
                except Exception as e:  # a view of the progress: never fails the build
                    _LOG.warning(
                        "progress artifact %s: update to %.0f%% failed (%s)", self.key, percent, e
                    )
