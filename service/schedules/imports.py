"""Runs that Airflow's scheduler started for a pipeline's DAG, recorded as executions of their schedule: a
cron schedule's (`scheduled__` runs) or the pipeline's data schedule's (`asset_triggered__` runs).

Schedules depend on executions, not the other way round: the background worker (service.workers) calls
`import_scheduled_runs` with the runs it read from Airflow."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dag_factory.exceptions import DefinitionError
from dag_factory.spec import validate_parameters
from dag_factory.spec.schedule import schedule_at, schedule_id_of
from service.airflow.client import AirflowClient
from service.airflow.models import DagRun
from service.db import utcnow
from service.errors import AirflowUnavailable, ServiceError
from service.executions.models import QUEUED, Execution
from service.executions.sync import refresh
from service.pipelines import repository as pipeline_repo
from service.pipelines import service as pipelines
from service.pipelines.models import Pipeline
from service.schedules import repository as schedule_repo
from service.schedules.data import data_schedule_id, is_data_schedule
from service.schedules.models import Schedule

log = logging.getLogger(__name__)
ASSET_TRIGGERED = "asset_triggered"  # Airflow's run type of a run its assets started (a data schedule's)
IMPORTED_RUN_TYPES = ("scheduled", ASSET_TRIGGERED)


def import_scheduled_runs(session: Session, airflow: AirflowClient, runs: list[DagRun]) -> list[str]:
    """Record as executions the runs that Airflow's scheduler started for a pipeline's DAG (run_type
    scheduled, or asset_triggered: its data schedule) and the service does not know yet, also those started
    while the service was down. A scheduled run's id names the schedule (dag_factory.spec.schedule); the
    execution carries that schedule's parameters over the pipeline's defaults (an asset-triggered run: the
    defaults). Safe on several replicas: the execution id is the run id (a primary key)."""
    new = _unknown_scheduled_runs(session, runs)
    dag_ids = {r.dag_id for r in new}
    by_dag = {p.dag_id: p for p in session.scalars(select(Pipeline).where(Pipeline.dag_id.in_(dag_ids)))} if new else {}
    imported = []
    for run in new:
        pipeline = by_dag.get(run.dag_id)
        if pipeline is None:
            continue  # not a pipeline's DAG
        ex = _execution_of(session, pipeline, run)
        try:
            with session.begin_nested():
                session.add(ex)
        except IntegrityError:
            continue  # another replica imported it first
        _refresh(ex, airflow)
        imported.append(ex.id)
    return imported


def _unknown_scheduled_runs(session: Session, runs: list[DagRun]) -> list[DagRun]:
    scheduled = [r for r in runs if r.run_type in IMPORTED_RUN_TYPES and len(r.dag_run_id) <= 64]
    if not scheduled:
        return []
    # An id already taken (by this DAG's execution, or, for a run id made by Airflow alone, another DAG's: the
    # execution id is the run id, a primary key) is not imported again.
    known = set(session.scalars(select(Execution.id).where(Execution.id.in_([r.dag_run_id for r in scheduled]))))
    return [r for r in scheduled if r.dag_run_id not in known]


def _schedule_id(session: Session, pipeline: Pipeline, run: DagRun) -> str | None:
    if run.run_type == ASSET_TRIGGERED:
        return data_schedule_id(pipeline.id)
    schedule_id = schedule_id_of(run.dag_run_id)
    logical_date = run.logical_date
    if schedule_id is None and logical_date is not None:
        # Its id was made while Airflow's scheduler still held the DAG's previous version: the logical
        # date tells the schedule (dag_factory.timetables).
        enabled = schedule_repo.enabled_for_pipeline(session, pipeline.id)
        entries = [{"id": s.id, "cron": s.cron_expression, "timezone": s.timezone} for s in enabled]
        found = schedule_at(entries, logical_date)
        schedule_id = str(found["id"]) if found else None
    return schedule_id


def _parameters(session: Session, pipeline: Pipeline, schedule_id: str | None) -> dict[str, Any]:
    """The schedule's parameters over the pipeline's defaults (as given when they no longer validate)."""
    schedule = session.get(Schedule, schedule_id) if schedule_id and not is_data_schedule(schedule_id) else None
    values = schedule.parameters if schedule is not None and schedule.pipeline_id == pipeline.id else {}
    try:
        definition = pipelines.parse_definition(pipeline_repo.current_version(session, pipeline).definition)
        return validate_parameters(definition, values)
    except (DefinitionError, ServiceError):
        return dict(values)


def _execution_of(session: Session, pipeline: Pipeline, run: DagRun) -> Execution:
    schedule_id = _schedule_id(session, pipeline, run)
    return Execution(
        id=run.dag_run_id,
        tenant_id=pipeline.tenant_id,
        pipeline_id=pipeline.id,
        pipeline_revision=pipeline.revision,
        dag_id=pipeline.dag_id,
        status=QUEUED,
        engine="airflow",
        priority="NORMAL",
        parameters=_parameters(session, pipeline, schedule_id),
        schedule_id=schedule_id,
        submitted=True,
        created_by=f"schedule:{schedule_id}" if schedule_id else "airflow-scheduler",
        submitted_at=run.run_after or run.queued_at or utcnow(),
        progress={},
    )


def _refresh(ex: Execution, airflow: AirflowClient) -> None:
    try:
        refresh(ex, airflow)
    except ServiceError as exc:
        if isinstance(exc, AirflowUnavailable):
            raise
        log.warning("imported scheduled run %s: %s", ex.id, exc.message)
