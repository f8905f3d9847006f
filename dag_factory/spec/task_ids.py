"""Every task id of a pipeline's DAG, spelled once: the builder names its tasks with these, and the service
reads run states, XComs and logs by them. Imports neither Airflow nor the service.

A stage's task ids carry the stage as a prefix (`sources.orders`) whether or not the builder draws a UI
group around them (dag_factory.builder.dag._group)."""

from __future__ import annotations

STAGING_SETUP_TASK_ID = "prepare_staging"  # creates the run's staging schema (an Airflow setup task)
# The task that drops a run's staging schema: an Airflow teardown, so it runs even when the run is cancelled.
TEARDOWN_TASK_ID = "cleanup_staging"
WATERMARK_TASK_ID = "commit_watermarks"  # saves incremental sources' marks once sinks and checks passed

SOURCES_PREFIX = "sources."
TRANSFORMATIONS_PREFIX = "transformations."
SINKS_PREFIX = "sinks."
QUALITY_PREFIX = "quality."  # the great-expectations checks: one task per checked dataset
APPROVAL_PREFIX = "approvals."  # human approval gates (Airflow HITL tasks): one task per gate


def source_task(name: str) -> str:
    return SOURCES_PREFIX + name


def partition_bounds_task(name: str) -> str:
    """The task that plans the key ranges of a partitioned source."""
    return f"{source_task(name)}.bounds"


def partition_task(name: str, index: int) -> str:
    return f"{source_task(name)}.part_{index}"


def transformation_task(name: str) -> str:
    return TRANSFORMATIONS_PREFIX + name


def sink_task(name: str) -> str:
    return SINKS_PREFIX + name


def quality_task(dataset: str) -> str:
    return QUALITY_PREFIX + dataset


def quality_dataset(task_id: str) -> str:
    """The dataset a quality task checks: `quality.orders` -> `orders`."""
    return task_id.removeprefix(QUALITY_PREFIX)


def approval_task(gate: str) -> str:
    return APPROVAL_PREFIX + gate


def approval_gate(task_id: str) -> str | None:
    """The gate an approval task waits on: `approvals.review` -> `review`; None for any other task."""
    return task_id.removeprefix(APPROVAL_PREFIX) if task_id.startswith(APPROVAL_PREFIX) else None
