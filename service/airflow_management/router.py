from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from service.airflow_management import service
from service.airflow_management.schemas import (
    DagOut,
    DagRunOut,
    DagRunsOut,
    TaskInstancesOut,
    TaskLogsOut,
    TriggerIn,
)
from service.auth import CurrentPrincipal
from service.db import DbSession
from service.deps import Airflow
from service.schemas import Page, PageNumber, PageSize

router = APIRouter(prefix="/v1/airflow", tags=["airflow"])
# Airflow's own id charsets (KEY_REGEX for DAG and task ids, the default allowed_run_id_pattern for run ids):
# anything else cannot name an Airflow object, and a control character would not even make a valid URL.
DagId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]+$", max_length=250)]
RunId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.~:+-]+$", max_length=250)]
TaskId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]+$", max_length=250)]


@router.get("/dags", response_model=Page[DagOut], response_model_by_alias=True)
def list_dags(
    principal: CurrentPrincipal,
    airflow: Airflow,
    page: PageNumber = 0,
    size: PageSize = 50,
) -> Page[DagOut]:
    return service.list_dags(airflow, principal.tenant_id, page * size, size)


@router.get("/dags/{dag_id}/runs", response_model=DagRunsOut, response_model_by_alias=True)
def list_runs(
    dag_id: DagId, principal: CurrentPrincipal, airflow: Airflow, limit: Annotated[int, Query(ge=1, le=100)] = 25
) -> DagRunsOut:
    return service.runs(airflow, principal.tenant_id, dag_id, limit)


@router.get("/dags/{dag_id}/runs/{run_id}/tasks", response_model=TaskInstancesOut, response_model_by_alias=True)
def list_tasks(dag_id: DagId, run_id: RunId, principal: CurrentPrincipal, airflow: Airflow) -> TaskInstancesOut:
    return service.tasks(airflow, principal.tenant_id, dag_id, run_id)


@router.get(
    "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/logs", response_model=TaskLogsOut, response_model_by_alias=True
)
def task_logs(
    dag_id: DagId,
    run_id: RunId,
    task_id: TaskId,
    principal: CurrentPrincipal,
    airflow: Airflow,
    try_number: Annotated[int | None, Query(alias="tryNumber", ge=1, description="default: the latest try")] = None,
    lines: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> TaskLogsOut:
    return service.task_logs(airflow, principal.tenant_id, dag_id, run_id, task_id, try_number, lines)


@router.post("/dags/{dag_id}/trigger", status_code=201, response_model=DagRunOut, response_model_by_alias=True)
def trigger(
    dag_id: DagId, principal: CurrentPrincipal, airflow: Airflow, session: DbSession, body: TriggerIn | None = None
) -> DagRunOut:
    return service.trigger(session, airflow, principal, dag_id, body or TriggerIn())


@router.post("/dags/{dag_id}/pause", response_model=DagOut, response_model_by_alias=True)
def pause(dag_id: DagId, principal: CurrentPrincipal, airflow: Airflow, session: DbSession) -> DagOut:
    return service.set_paused(session, airflow, principal, dag_id, True)


@router.post("/dags/{dag_id}/unpause", response_model=DagOut, response_model_by_alias=True)
def unpause(dag_id: DagId, principal: CurrentPrincipal, airflow: Airflow, session: DbSession) -> DagOut:
    return service.set_paused(session, airflow, principal, dag_id, False)
