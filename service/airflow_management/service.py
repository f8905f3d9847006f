"""Airflow management: the Airflow REST API passed through, scoped to the caller's tenant. A tenant sees only
DAGs whose id starts with `<tenant>.`; anything else is a 404, exactly like a DAG that does not exist."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from service.airflow.client import AirflowClient
from service.airflow.models import Dag, DagRun
from service.airflow_management.schemas import (
    DagOut,
    DagRunOut,
    DagRunsOut,
    TaskInstanceOut,
    TaskInstancesOut,
    TaskLogsOut,
    TriggerIn,
)
from service.audit.service import record
from service.auth import Principal
from service.errors import NotFound
from service.executions.logtext import readable, render_event
from service.schemas import Page

AIRFLOW_PAGE = 100


def _own(tenant_id: str, dag_id: str) -> None:
    if not dag_id.startswith(f"{tenant_id}."):
        raise NotFound(f"DAG '{dag_id}' not found")


def _ms(start: datetime | None, end: datetime | None) -> int | None:
    return int((end - start).total_seconds() * 1000) if start and end else None


def list_dags(airflow: AirflowClient, tenant_id: str, offset: int, limit: int) -> Page[DagOut]:
    """Airflow's dag_id_pattern is a substring LIKE (`_` and `%` are wildcards, `acme.` also matches
    `xacme.…`), so its answer is only a pre-filter: the prefix decides, and paging is ours."""
    prefix, dags, seen = f"{tenant_id}.", [], 0
    while True:
        page = airflow.list_dags(dag_id_pattern=prefix, limit=AIRFLOW_PAGE, offset=seen)
        seen += len(page.dags)
        dags += [d for d in page.dags if d.dag_id.startswith(prefix)]
        if not page.dags or seen >= page.total_entries:
            break
    items = [_dag_out(d) for d in dags[offset : offset + limit]]
    return Page[DagOut](items=items, total=len(dags), page=offset // limit, size=limit)


def _dag_out(dag: Dag) -> DagOut:
    return DagOut.model_validate(dag.model_dump(include=set(DagOut.model_fields)))


def runs(airflow: AirflowClient, tenant_id: str, dag_id: str, limit: int) -> DagRunsOut:
    _own(tenant_id, dag_id)
    data = airflow.list_runs(dag_id, limit=limit)
    return DagRunsOut(dag_id=dag_id, runs=[_run_out(r) for r in data.dag_runs], total=data.total_entries)


def _run_out(run: DagRun) -> DagRunOut:
    fields = run.model_dump(include=set(DagRunOut.model_fields))
    return DagRunOut.model_validate(
        {**fields, "run_id": run.dag_run_id, "duration_ms": _ms(run.start_date, run.end_date)}
    )


def tasks(airflow: AirflowClient, tenant_id: str, dag_id: str, run_id: str) -> TaskInstancesOut:
    _own(tenant_id, dag_id)
    airflow.get_run(dag_id, run_id)  # a 404 names the run, not an empty list
    out = []
    for ti in airflow.task_instances(dag_id, run_id):
        fields = ti.model_dump(include=set(TaskInstanceOut.model_fields))
        duration_ms = int(ti.duration * 1000) if ti.duration is not None else None
        out.append(TaskInstanceOut.model_validate({**fields, "duration_ms": duration_ms}))
    return TaskInstancesOut(dag_id=dag_id, run_id=run_id, tasks=out)


def task_logs(
    airflow: AirflowClient, tenant_id: str, dag_id: str, run_id: str, task_id: str, try_number: int | None, lines: int
) -> TaskLogsOut:
    _own(tenant_id, dag_id)
    found = [t for t in airflow.task_instances(dag_id, run_id) if t.task_id == task_id]
    if not found:
        raise NotFound(f"run '{run_id}' of DAG '{dag_id}' has no task '{task_id}'")
    attempt = try_number or found[0].try_number
    events = airflow.task_log(dag_id, run_id, task_id, attempt) if attempt else []
    rendered = [render_event(e) for e in events if readable(e)]
    return TaskLogsOut(dag_id=dag_id, run_id=run_id, task_id=task_id, try_number=attempt, lines=rendered[-lines:])


def trigger(session: Session, airflow: AirflowClient, principal: Principal, dag_id: str, body: TriggerIn) -> DagRunOut:
    """Trigger a DAG run directly in Airflow (no execution is stored); recorded in the audit log once Airflow
    has accepted it."""
    _own(principal.tenant_id, dag_id)
    airflow.get_dag(dag_id)
    run_id = f"api__{datetime.now().strftime('%Y%m%dT%H%M%S')}_{uuid.uuid4().hex[:8]}"
    note = body.note or f"triggered through pipeline-service by {principal.subject}"
    out = _run_out(airflow.trigger(dag_id, run_id, body.conf, note=note))
    record(session, principal, "trigger", "airflow_dag", dag_id, details={"runId": out.run_id, "conf": body.conf})
    return out


def set_paused(session: Session, airflow: AirflowClient, principal: Principal, dag_id: str, paused: bool) -> DagOut:
    _own(principal.tenant_id, dag_id)
    out = _dag_out(airflow.set_paused(dag_id, paused))
    record(session, principal, "pause" if paused else "unpause", "airflow_dag", dag_id)
    return out
