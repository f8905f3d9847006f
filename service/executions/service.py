"""Executions: the commands (execute, cancel, retry) and the outbox's submission. An execution is recorded
first, submitted to Airflow as a DAG run whose run_id is the execution id (submit), and kept in step with
Airflow's run (service.executions.sync)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from dag_factory.exceptions import DefinitionError
from dag_factory.spec import validate_parameters
from dag_factory.spec.models import OBJECT_SINK_TYPES, connection_names_of
from dag_factory.spec.task_ids import (
    SOURCES_PREFIX,
    STAGING_SETUP_TASK_ID,
    TEARDOWN_TASK_ID,
    TRANSFORMATIONS_PREFIX,
    quality_task,
)
from service.airflow.client import AirflowClient, AirflowConflict, AirflowNotFound
from service.airflow.models import TaskInstance
from service.audit.service import record
from service.auth import Principal
from service.connections import repository as connection_repo
from service.db import utcnow
from service.errors import AirflowUnavailable, Conflict, Forbidden, ServiceError, ValidationFailed
from service.executions import events, limits
from service.executions.models import CANCELLED, DONE_TASK_STATES, FAILED, QUEUED, TERMINAL, Execution
from service.executions.repository import estimate_duration_ms
from service.executions.schemas import ENGINES, ExecuteIn
from service.executions.sync import to_out as to_out  # the API's view of an execution, for other features
from service.pipelines import repository as pipeline_repo
from service.pipelines import service as pipelines
from service.pipelines.models import Pipeline

MAX_SUBMIT_ATTEMPTS = 20


# Raises BudgetExceeded when a monthly budget of the pipeline or its tenant is reached (service.cost, handed
# over in service/main.py: executions may not import cost).
BudgetCheck = Callable[[Session, Pipeline], None]


def execute(
    session: Session,
    principal: Principal,
    pipeline_id: str,
    body: ExecuteIn,
    *,
    rate_per_minute: int,
    budget_check: BudgetCheck | None = None,
) -> Execution:
    if body.override_budget and "admin" not in principal.roles:
        raise Forbidden(
            "only an admin may override a budget",
            details=[{"path": "overrideBudget", "message": "requires the admin role"}],
        )
    limits.admit_rate(session, principal.tenant_id, rate_per_minute)
    pipeline = pipelines.get_or_404(session, principal.tenant_id, pipeline_id)
    if body.engine_override is not None and body.engine_override not in ENGINES:
        raise ValidationFailed(
            f"engine '{body.engine_override}' is not supported; supported engines: {', '.join(ENGINES)}",
            details=[{"path": "engine_override", "message": f"must be one of {list(ENGINES)} or null"}],
        )
    if pipeline.status == pipelines.INVALID:
        raise Conflict(f"pipeline '{pipeline.name}' is INVALID and cannot run: {pipeline.status_detail or ''}".strip())
    definition = pipelines.parse_definition(pipeline_repo.current_version(session, pipeline).definition)
    try:
        parameters = validate_parameters(definition, body.parameters)
    except DefinitionError as exc:
        raise ValidationFailed(f"{exc.errors[0]['path']}: {exc.errors[0]['message']}", details=exc.errors) from None
    limits.admit_run(session, pipeline, definition.orchestration.max_active_runs)
    if budget_check is not None and not body.override_budget:
        budget_check(session, pipeline)  # under the admission locks taken above
    ex = Execution(
        id="exec-" + uuid.uuid4().hex[:24],
        tenant_id=principal.tenant_id,
        pipeline_id=pipeline.id,
        pipeline_revision=pipeline.revision,
        dag_id=pipeline.dag_id,
        status=QUEUED,
        engine="airflow",
        priority=body.priority,
        parameters=parameters,
        created_by=principal.subject,
        budget_override=body.override_budget,
        progress={"estimatedDurationMs": estimate_duration_ms(session, pipeline.id)},
    )
    session.add(ex)
    session.flush()
    details: dict[str, Any] = {
        "pipelineId": pipeline.id,
        "pipelineRevision": pipeline.revision,
        "priority": body.priority,
    }
    if body.override_budget:
        details["overrideBudget"] = True
    record(session, principal, "execute", "execution", ex.id, details={**details, "parameters": parameters})
    return ex


# -- submission (the outbox dispatcher) ----------------------------------------------------------------
def ready_to_submit(session: Session, ex: Execution, pipeline: Pipeline) -> bool:
    """False when it cannot be submitted now: it waits (QUEUED, saying for what) while a connection it uses
    has not reached Airflow yet; it is FAILED when what it was accepted for can no longer run."""
    waiting = _connections_on_their_way(session, pipeline)
    if waiting:
        ex.last_submit_error = waiting
        return False
    problem = None
    if pipeline.status == pipelines.INVALID:
        problem = f"pipeline is INVALID: {pipeline.status_detail or 'see the pipeline'}"
    elif pipeline.revision != ex.pipeline_revision:
        # Updated between execute and submission: the DAG now runs the new revision, so check again.
        definition = pipelines.parse_definition(pipeline_repo.current_version(session, pipeline).definition)
        try:
            ex.parameters = validate_parameters(definition, ex.parameters)
            ex.pipeline_revision = pipeline.revision
        except DefinitionError as exc:
            problem = f"parameters do not fit pipeline revision {pipeline.revision}: {exc}"
    if problem:
        ex.status, ex.finished_at, ex.error_message = FAILED, utcnow(), problem[:2000]
    return problem is None


def _connections_on_their_way(session: Session, pipeline: Pipeline) -> str | None:
    definition = pipeline_repo.current_version(session, pipeline).definition
    pending = connection_repo.not_in_airflow(session, pipeline.tenant_id, connection_names_of(definition))
    if not pending:
        return None
    reasons = "; ".join(f"'{c.name}'" + (f" ({c.airflow_sync_error})" if c.airflow_sync_error else "") for c in pending)
    return f"waiting for connection(s) to reach Airflow: {reasons}"[:2000]


def submit(ex: Execution, airflow: AirflowClient) -> None:
    """Create the Airflow run. The run_id is the execution id, so a repeat can never make a second run."""
    try:
        note = f"pipeline-service execution {ex.id} (priority {ex.priority})"
        airflow.trigger(ex.dag_id, ex.id, ex.parameters, note=note)
    except AirflowConflict:
        pass  # an earlier attempt got through: the run exists
    except AirflowUnavailable:
        ex.submit_attempts += 1
        ex.last_submit_error = "Airflow unreachable"
        raise
    except ServiceError as exc:
        ex.submit_attempts += 1
        ex.last_submit_error = exc.message
        if ex.submit_attempts >= MAX_SUBMIT_ATTEMPTS:
            previous, ex.status, ex.finished_at = ex.status, FAILED, utcnow()
            ex.error_message = f"Airflow did not accept the run: {exc.message}"
            events.finished(Session.object_session(ex), ex, previous)
        return
    ex.submitted = True
    ex.last_submit_error = None


def cancel(ex: Execution, airflow: AirflowClient, principal: Principal | None = None) -> None:
    """Cancel in Airflow and here; with `principal` (a request's), recorded in the audit log."""
    if ex.status in TERMINAL:
        raise Conflict(f"execution '{ex.id}' is already {ex.status} and cannot be cancelled")
    if ex.submitted:
        _fail_unfinished_tasks(ex, airflow)
    previous, ex.status, ex.finished_at = ex.status, CANCELLED, utcnow()
    ex.error_message = "cancelled by request"
    session = Session.object_session(ex)
    events.finished(session, ex, previous)
    if principal is not None and session is not None:
        details = {"pipelineId": ex.pipeline_id, "previousStatus": previous}
        record(session, principal, "cancel", "execution", ex.id, details=details)


def _fail_unfinished_tasks(ex: Execution, airflow: AirflowClient) -> None:
    """Cancel in Airflow by failing every unfinished task except the teardown.

    Not PATCH dagRun state=failed: with a teardown pending, Airflow keeps such a run going, runs the teardown
    and then judges the run by its (skipped) leaves: success. Failing the tasks kills the running ones, lets
    the teardown drop the staging schema, and the run ends failed.
    """
    for _ in range(3):  # a task may start between our read and our write: look again
        try:
            tis = airflow.task_instances(ex.dag_id, ex.id)
        except AirflowNotFound:
            return
        unfinished = [t.task_id for t in tis if t.state not in DONE_TASK_STATES and t.task_id != TEARDOWN_TASK_ID]
        if not unfinished:
            return
        airflow.set_task_states(ex.dag_id, ex.id, unfinished, "failed")


# -- retry ---------------------------------------------------------------------------------------------
_STAGING_GROUPS = (STAGING_SETUP_TASK_ID, SOURCES_PREFIX, TRANSFORMATIONS_PREFIX)


def retry(session: Session, ex: Execution, airflow: AirflowClient, principal: Principal | None = None) -> None:
    """Re-run the failed tasks of a FAILED execution in the same Airflow run (Airflow's clear).

    The teardown dropped the run's staging schema, so when a failed task reads staged data (anything but a
    check of a sink table) the staging side is rebuilt too: setup, sources, transformations, teardown. Sinks
    that succeeded are not loaded again (an append sink would get its rows twice)."""
    if ex.status != FAILED:
        raise Conflict(f"execution '{ex.id}' is {ex.status}; only a FAILED execution can be retried")
    if not ex.submitted:
        raise Conflict(f"execution '{ex.id}' never reached Airflow ({ex.error_message}); execute the pipeline again")
    # A retried execution is active again: it counts against max_active_runs like a new one.
    pipeline = pipelines.get_or_404(session, ex.tenant_id, ex.pipeline_id)
    definition = pipelines.parse_definition(pipeline_repo.current_version(session, pipeline).definition)
    limits.admit_run(session, pipeline, definition.orchestration.max_active_runs)
    tis = airflow.task_instances(ex.dag_id, ex.id)
    version = pipeline_repo.version(session, ex.pipeline_id, ex.pipeline_revision)
    task_ids = retry_set(tis, table_check_tasks(version.definition if version else {}))
    airflow.clear_tasks(ex.dag_id, ex.id, task_ids)
    ex.status, ex.finished_at, ex.error_message, ex.quality_results = QUEUED, None, None, None
    ex.progress = {**(ex.progress or {}), "refreshedAt": None, "retries": (ex.progress or {}).get("retries", 0) + 1}
    if principal is not None:
        details = {"pipelineId": ex.pipeline_id, "tasks": task_ids, "retries": ex.progress["retries"]}
        record(session, principal, "retry", "execution", ex.id, details=details)


def table_check_tasks(definition: dict[str, Any]) -> set[str]:
    """Task ids of the checks that read a sink's table rather than staged data (dag_factory.builder)."""
    sinks = definition.get("sinks") or {}
    return {
        quality_task(name)
        for name in {c.get("dataset") for c in definition.get("quality_checks") or []}
        if isinstance(sinks.get(name), dict) and sinks[name].get("type") not in OBJECT_SINK_TYPES
    }


def retry_set(tis: list[TaskInstance], table_checks: set[str]) -> list[str]:
    every = [t.task_id for t in tis]
    failed = [t.task_id for t in tis if t.state in ("failed", "upstream_failed")]
    if not failed:  # the run failed as a whole (run timeout, marked failed): re-run what did not succeed
        failed = [t.task_id for t in tis if t.state not in ("success", "skipped")]
    chosen = set(failed)
    if any(t not in table_checks for t in failed):
        chosen |= {t for t in every if t.startswith(_STAGING_GROUPS)}
    if TEARDOWN_TASK_ID in every:
        chosen.add(TEARDOWN_TASK_ID)
    return [t for t in every if t in chosen]
