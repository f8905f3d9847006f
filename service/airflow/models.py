"""Airflow's answers as the service reads them: the fields it uses, typed. Unknown fields are tolerated (Airflow
adds fields between versions); a missing or mistyped required field is an AirflowError naming the endpoint
(AirflowClient._parse), never a KeyError deep inside a caller."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class AirflowModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Dag(AirflowModel):
    dag_id: str
    dag_display_name: str | None = None
    description: str | None = None
    is_paused: bool = False
    is_stale: bool = False
    has_import_errors: bool = False
    last_parsed_time: datetime | None = None
    file_token: str | None = None
    fileloc: str | None = None
    timetable_summary: str | None = None
    timetable_description: str | None = None
    max_active_runs: int | None = None
    owners: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    next_dagrun_run_after: datetime | None = None

    @field_validator("tags", mode="before")
    @classmethod
    def _tag_names(cls, tags: Any) -> list[str]:
        # Airflow 3 lists tags as {"name", "dag_id"} objects.
        return [str(t.get("name")) if isinstance(t, dict) else str(t) for t in tags or [] if t]

    @field_validator("owners", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return value or []


class DagDetails(Dag):
    doc_md: str | None = None


class DagList(AirflowModel):
    dags: list[Dag] = Field(default_factory=list)
    total_entries: int = 0


class DagRun(AirflowModel):
    dag_id: str
    dag_run_id: str
    state: str | None = None
    run_type: str | None = None
    run_after: datetime | None = None
    queued_at: datetime | None = None
    logical_date: datetime | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    updated_at: datetime | None = None
    conf: dict[str, Any] | None = None
    note: str | None = None
    triggered_by: str | None = None


class DagRunList(AirflowModel):
    dag_runs: list[DagRun] = Field(default_factory=list)
    total_entries: int = 0


class TaskInstance(AirflowModel):
    task_id: str
    dag_id: str | None = None
    dag_run_id: str | None = None
    map_index: int = -1
    state: str | None = None
    try_number: int = 0
    start_date: datetime | None = None
    end_date: datetime | None = None
    duration: float | None = None
    pool: str | None = None
    queue: str | None = None
    operator: str | None = None
    task_display_name: str | None = None

    @field_validator("try_number", mode="before")
    @classmethod
    def _no_try_yet(cls, value: Any) -> Any:
        return value or 0  # null before the first try in some versions


class TaskInstanceList(AirflowModel):
    task_instances: list[TaskInstance] = Field(default_factory=list)
    total_entries: int = 0


class XComEntry(AirflowModel):
    key: str
    value: Any = None


class DagImportError(AirflowModel):
    filename: str = ""
    timestamp: datetime | None = None
    stack_trace: str = ""


class ImportErrorList(AirflowModel):
    import_errors: list[DagImportError] = Field(default_factory=list)


class LogEvent(AirflowModel):
    """One of Airflow 3's structured task-log events (only the fields the service renders survive
    service.airflow.logs.sanitized)."""

    event: str = ""
    timestamp: str | None = None
    level: str | None = None
    logger: str | None = None
    error_detail: list[Any] | None = None


class HitlDetail(AirflowModel):
    """A human-in-the-loop task's question and answer (providers-standard ApprovalOperator / HITLOperator)."""

    subject: str | None = None
    body: str | None = None
    options: list[str] = Field(default_factory=list)
    chosen_options: list[str] | None = None
    params_input: dict[str, Any] | None = None
    responded_at: datetime | None = None
    response_received: bool = False
