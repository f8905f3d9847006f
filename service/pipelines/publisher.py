"""Publishing: pipeline row -> DAG file -> Airflow parses it now -> unpaused -> ACTIVE (or INVALID).

Runs in the background worker, never inside a request: a request stores the pipeline as CREATED and
returns; the worker claims it (CREATED -> DEPLOYING, a conditional UPDATE, so replicas never publish the
same revision twice) and reports the outcome on the row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypedDict

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from dag_factory.spec.models import connection_names_of
from service import naming
from service.airflow.client import AirflowClient
from service.config import Settings
from service.connections import repository as connection_repo
from service.db import session_scope, utcnow
from service.errors import AirflowUnavailable, ServiceError, UpstreamError, ValidationFailed
from service.pipelines import assets, dagfile, repository
from service.pipelines.models import Pipeline
from service.pipelines.service import ACTIVE, CREATED, DEPLOYING, INVALID, parse_definition

log = logging.getLogger(__name__)


class TimetableEntry(TypedDict):
    """One enabled schedule as the pipeline's DAG file carries it (dag_factory's timetable reads it)."""

    id: str
    cron: str
    timezone: str
    parameters: dict[str, Any]
    since: str  # ISO 8601: when the schedule last changed


# A pipeline's enabled schedules, (session, pipeline_id) -> entries in the order the timetable numbers them.
# Schedules build on pipelines, so the publisher is handed this (service/main.py wires
# service.schedules.service.timetable_entries) rather than importing it.
Timetable = Callable[[Session, str], list[TimetableEntry]]


class Publisher:
    def __init__(
        self, settings: Settings, airflow: AirflowClient, sessions: sessionmaker[Session], *, timetable: Timetable
    ):
        self.settings = settings
        self.timetable = timetable
        self.airflow = airflow
        self.sessions = sessions
        self.store = dag_store(settings)
        self.on_published: Callable[[], None] = lambda: None

    # -- claiming -----------------------------------------------------------------------------------
    def run_pending(self) -> int:
        """Publish every pipeline waiting for it; returns how many were attempted."""
        stale = utcnow() - timedelta(seconds=self.settings.publish_timeout_seconds * 2)
        with session_scope(self.sessions) as s:
            candidates = s.execute(
                select(Pipeline.id, Pipeline.revision).where(
                    or_(Pipeline.status == CREATED, (Pipeline.status == DEPLOYING) & (Pipeline.updated_at < stale))
                )
            ).all()
        done = 0
        for pipeline_id, revision in candidates:
            if self._claim(pipeline_id, revision):
                self.publish(pipeline_id, revision)
                done += 1
        return done

    def _claim(self, pipeline_id: str, revision: int) -> bool:
        stale = utcnow() - timedelta(seconds=self.settings.publish_timeout_seconds * 2)
        with session_scope(self.sessions) as s:
            result = s.execute(
                update(Pipeline)
                .where(
                    Pipeline.id == pipeline_id,
                    Pipeline.revision == revision,
                    or_(Pipeline.status == CREATED, (Pipeline.status == DEPLOYING) & (Pipeline.updated_at < stale)),
                )
                .values(status=DEPLOYING, status_detail=None, updated_at=utcnow())
            )
            assert isinstance(result, CursorResult)  # an UPDATE's is (with a row count); execute() says any Result
            return bool(result.rowcount)

    def _finish(self, pipeline_id: str, revision: int, status: str, detail: str | None) -> None:
        values: dict[str, Any] = {"status": status, "status_detail": detail, "updated_at": utcnow()}
        if status == ACTIVE:
            values["deployed_at"] = utcnow()
        with session_scope(self.sessions) as s:
            # Only the revision we published: a newer update stays CREATED and is published next.
            s.execute(
                update(Pipeline)
                .where(Pipeline.id == pipeline_id, Pipeline.revision == revision, Pipeline.status == DEPLOYING)
                .values(**values)
            )

    # -- publishing ---------------------------------------------------------------------------------
    def _config(self, s: Session, pipeline: Pipeline) -> tuple[dict[str, Any], str]:
        """The DAG file's JSON, and the mark its DAG's docs carry (a digest of everything else in it): what
        tells that Airflow serves this file and not one written a moment before."""
        definition = repository.current_version(s, pipeline).definition
        conn_ids = {c.name: c.airflow_conn_id for c in connection_repo.list_all(s, pipeline.tenant_id)}
        used = {n: conn_ids[n] for n in connection_names_of(definition) if n in conn_ids}
        config: dict[str, Any] = {
            "dag_id": pipeline.dag_id,
            "definition": definition,
            "connections": used,
            "description": pipeline.description,
            "owner": pipeline.created_by or "pipeline-service",
            "tags": [*_identity_tags(pipeline), *pipeline.tags][:20],
            "schedules": self.timetable(s, pipeline.id),  # enabled ones; none: manual runs only
            # Inlets, outlets and the data schedule as the tenant's Airflow assets, resolved now: the
            # dag-processor looks up no connection.
            "assets": assets.dag_assets(
                s, pipeline.tenant_id, pipeline.id, parse_definition(definition), root=assets.file_root(self.settings)
            ),
        }
        mark = PUBLISHED_MARK + hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:20]
        return {**config, "doc": _dag_doc(pipeline, mark)}, mark

    def publish(self, pipeline_id: str, revision: int) -> None:
        with session_scope(self.sessions) as s:
            pipeline = s.get(Pipeline, pipeline_id)
            if pipeline is None:
                return
            dag_id, tenant = pipeline.dag_id, pipeline.tenant_id
            problem: str | None = None
            try:
                config, mark = self._config(s, pipeline)
            except ValidationFailed as exc:  # e.g. its data schedule names a dataset no pipeline writes any more
                config, mark, problem = {}, "", exc.message
        if problem is not None:
            log.info("pipeline %s (%s) revision %s -> INVALID: %s", pipeline_id, dag_id, revision, problem)
            self._finish(pipeline_id, revision, INVALID, problem)
            return
        text = dagfile.render(pipeline_id=pipeline_id, tenant=tenant, config=config)
        written_at = utcnow()
        self.store.write(naming.dag_file_name(dag_id), text)
        try:
            rewrite = partial(self.store.write, naming.dag_file_name(dag_id), text)
            status, detail = self._wait_for_airflow(dag_id, written_at, mark, rewrite)
            if status == ACTIVE:
                self.airflow.set_paused(dag_id, False)
        except (AirflowUnavailable, UpstreamError) as exc:
            # Stay publishable: the worker tries again when Airflow answers (an HTTP 5xx, e.g. its metadata
            # database busy, is no verdict on the DAG).
            log.warning("publishing %s postponed: %s", dag_id, exc.message)
            status, detail = CREATED, f"waiting for Airflow: {exc.message}"
        except ServiceError as exc:
            status, detail = INVALID, exc.message
        log.info("pipeline %s (%s) revision %s -> %s", pipeline_id, dag_id, revision, status)
        self._finish(pipeline_id, revision, status, detail)
        if status == ACTIVE:
            self.on_published()  # queued executions of this pipeline can go now

    def _wait_for_airflow(
        self, dag_id: str, written_at: datetime, mark: str, rewrite: Callable[[], None]
    ) -> tuple[str, str | None]:
        """ACTIVE once Airflow serves the DAG of the file just written (its docs carry `mark`); INVALID with
        Airflow's import error, or when it does not within the publish timeout.

        Parses of the previous file for more than STALE_REWRITE_SECONDS: the file is written again. An S3 DAG
        bundle re-downloads an object only when its size differs or its LastModified (whole seconds) is newer
        than the local copy: a same-size rewrite within the second the previous one was downloaded is missed
        until the object changes again."""
        file_name = naming.dag_file_name(dag_id)
        deadline = time.monotonic() + self.settings.publish_timeout_seconds
        next_reparse = 0.0
        stale_since: float | None = None
        while time.monotonic() < deadline:
            if time.monotonic() >= next_reparse:
                self._request_parse(dag_id)
                next_reparse = time.monotonic() + 5.0
            dag = self.airflow.find_dag_details(dag_id)
            error = self._import_error(file_name, written_at)
            if error is not None:
                return INVALID, error
            if dag and dag.last_parsed_time and dag.last_parsed_time >= written_at and not dag.has_import_errors:
                if mark in (dag.doc_md or ""):
                    return ACTIVE, None
                # Parsed after the write, but from the file as it was before (the parse began earlier, or
                # another publish of this DAG wrote in between): ask for another parse now.
                next_reparse = 0.0
                stale_since = stale_since or time.monotonic()
                if time.monotonic() - stale_since > STALE_REWRITE_SECONDS:
                    rewrite()
                    stale_since = None
            time.sleep(0.25)
        return INVALID, f"Airflow did not load the DAG within {self.settings.publish_timeout_seconds:.0f} s"

    def _request_parse(self, dag_id: str) -> None:
        """Ask for a rescan through any DAG of the bundle: the pipeline's own, or the sentinel."""
        for candidate in (dag_id, naming.SENTINEL_DAG_ID):
            dag = self.airflow.find_dag(candidate)
            if dag and dag.file_token:
                self.airflow.reparse(dag.file_token)
                return

    def _import_error(self, file_name: str, since: datetime) -> str | None:
        for err in self.airflow.import_errors():
            if err.filename.endswith(file_name) and err.timestamp and err.timestamp >= since:
                return (err.stack_trace or "import error")[-4000:]
        return None

    # -- removal ------------------------------------------------------------------------------------
    def remove(self, dag_id: str) -> None:
        self.store.delete(naming.dag_file_name(dag_id))
        try:
            self.airflow.delete_dag(dag_id)
        except ServiceError as exc:
            # The file is gone, so Airflow marks the DAG stale at its next scan anyway.
            log.warning("could not delete DAG %s in Airflow: %s", dag_id, exc.message)


PUBLISHED_MARK = "published:"
STALE_REWRITE_SECONDS = 2.0


def dag_store(settings: Settings) -> dagfile.DagStore:
    """Where the DAG files go: the S3 DAG bundle's prefix when configured, else the DAGs folder."""
    if not settings.dag_bundle_s3_bucket:
        return dagfile.FolderStore(Path(settings.dags_dir))
    return dagfile.S3Store(
        settings.dag_bundle_s3_bucket,
        settings.dag_bundle_s3_prefix,
        endpoint_url=settings.dag_bundle_s3_endpoint_url,
        region=settings.dag_bundle_s3_region,
        access_key_id=settings.dag_bundle_s3_access_key_id,
        secret_access_key=settings.dag_bundle_s3_secret_access_key,
    )


def _dag_doc(pipeline: Pipeline, mark: str) -> str:
    """The DAG's docs in Airflow's UI: the pipeline's description, where it comes from, the publication mark."""
    origin = (
        f"template `{pipeline.template_id}` {pipeline.template_version or ''}".strip() if pipeline.template_id else ""
    )
    facts = [
        f"Pipeline `{pipeline.name}` (`{pipeline.id}`), revision {pipeline.revision} (version {pipeline.version})",
        f"owner {pipeline.created_by or 'pipeline-service'}",
        *([f"from {origin}"] if origin else []),
        f"`{mark}`",
    ]
    return "\n\n".join([*([pipeline.description] if pipeline.description else []), " · ".join(facts)])


def _identity_tags(pipeline: Pipeline) -> list[str]:
    """The DAG's tags that say whose and what it is, filterable in Airflow's UI."""
    tags = [f"tenant:{pipeline.tenant_id}", f"pipeline:{pipeline.name}"]
    return tags + ([f"template:{pipeline.template_id}"] if pipeline.template_id else [])
