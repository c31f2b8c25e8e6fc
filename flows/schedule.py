"""Scheduled dataset builds: reproduce the DVC pipeline, release it if it changed, push it.

``verse-etl serve`` registers this flow as a deployment with a cron schedule (from the CLI or
``params.yaml: schedule``) and serves it against the configured Prefect API (a local
``prefect server`` or Prefect Cloud).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from verse_etl.publish.pipeline import lock_changed_since_release, push, release_tag, reproduce
from verse_etl.publish.release import release


@task(name="dvc-repro", retries=1, retry_delay_seconds=30)
def repro_task(repo: Path) -> list[str]:
    """Run every stage that changed."""
    return reproduce(repo)


@task(name="release")
def release_task(repo: Path, out: str) -> str | None:
    """Tag the build as a new version if its outputs changed since the previous release."""
    if not lock_changed_since_release(repo):
        return None
    tag = release_tag()
    notes = release(repo, tag, out)
    create_markdown_artifact(
        notes.to_markdown(), key="release-notes", description=f"Release notes of {tag}"
    )
    return tag


@task(name="dvc-push", retries=3, retry_delay_seconds=[10, 60, 300])
def push_task(repo: Path, remote: str | None) -> int:
    """Send the outputs to the DVC remote (retried: remotes are network services)."""
    return push(repo, remote)


@flow(
    name="verse-etl-scheduled-release",
    flow_run_name="release {project}",
    log_prints=True,
)
def scheduled_release(
    project: str, out: str = "data/build", remote: str | None = None, do_push: bool = True
) -> str | None:
    """Build, release and push the dataset of the DVC project at ``project``."""
    logger = get_run_logger()
    repo = Path(project)
    stages = repro_task(repo)
    logger.info("dvc repro ran %d stage(s): %s", len(stages), ", ".join(stages) or "none")
    tag = release_task(repo, out)
    logger.info("released %s" if tag else "no change since the previous release%s", tag or "")
    if do_push:
        logger.info("pushed %d file(s)", push_task(repo, remote))
    return tag


def serve(project: Path, cron: str, name: str, out: str, remote: str | None, do_push: bool) -> None:
    """Register the deployment with its cron schedule and run its flow runs until stopped."""
    scheduled_release.serve(
        name=name,
        cron=cron,
        parameters={
            "project": str(project.resolve()),
            "out": out,
            "remote": remote,
            "do_push": do_push,
        },
        description=(
            f"Scheduled verse-etl build of {project.resolve()}: dvc repro, release if changed, "
            "dvc push."
        ),
        tags=["verse-etl", project.resolve().name],
    )
