"""The ingest's progress artifact, updated from a sender thread: merged, never lost at the end."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import pytest

pytestmark = pytest.mark.slow  # a real Prefect server (the session's)

T = TypeVar("T")


def _data(artifact_id: uuid.UUID) -> float:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[artifact_id]))
        )
    return float(artifact.data)  # type: ignore[arg-type]


def test_updates_faster_than_the_api_end_at_the_last_value(prefect_server: str) -> None:
    from prefect import flow
    from verse_etl.flows.progress_artifact import ProgressArtifact

    @flow
    def ingest() -> ProgressArtifact:
        with ProgressArtifact(f"progress-{uuid.uuid4().hex[:8]}", "test") as artifact:
            # Far faster than the API answers: most are merged; the last is pending at the end.
            for done in range(1, 201):
                artifact.update(done / 2)
        return artifact

    artifact = ingest()
    assert artifact.id is not None and _data(artifact.id) == 100.0
    assert 1 <= artifact.sent < 200  # merged, not sent one by one


def test_a_failing_update_is_logged_and_the_block_ends(prefect_server: str) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from verse_etl.flows.progress_artifact import ProgressArtifact

    @flow
    def ingest() -> ProgressArtifact:
        with ProgressArtifact(f"progress-{uuid.uuid4().hex[:8]}", "test") as artifact:
            deadline = time.monotonic() + 60  # created by the sender, not before __enter__ ends
            while artifact.id is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert artifact.id is not None
            with get_client(sync_client=True) as client:
                client.delete_artifact(artifact.id)  # the API now answers 404 to its updates
            artifact.update(50.0)
        return artifact

    artifact, records = _logged(ingest)
    assert artifact.sent == 0
    assert any("update to 50% failed" in r.getMessage() for r in records), records


def test_an_artifact_that_cannot_be_made_is_logged_and_the_block_ends(prefect_server: str) -> None:
    # Made by the sender, not in the flow's thread: a failure there must neither be lost nor
    # fail the flow (Prefect refuses keys with capitals and spaces).
    from prefect import flow
    from verse_etl.flows.progress_artifact import ProgressArtifact

    @flow
    def ingest() -> ProgressArtifact:
        with ProgressArtifact("Not A Key!", "test") as artifact:
            artifact.update(50.0)
        return artifact

    artifact, records = _logged(ingest)
    assert (artifact.id, artifact.sent) == (None, 0)
    assert any("Not A Key!: not created" in r.getMessage() for r in records), records


def _logged(run: Callable[[], T]) -> tuple[T, list[logging.LogRecord]]:
    """What ``run`` returned, and the records the progress artifact logged meanwhile."""
    # Its own handler: once Prefect's logging is set up (by any earlier flow in this process),
    # verse_etl's records go to Prefect's handlers and may not reach pytest's.
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("verse_etl.flows.progress_artifact")
    logger.addHandler(handler)
    try:
        result = run()
    finally:
        logger.removeHandler(handler)
    return result, records
