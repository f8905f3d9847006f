"""Pipelines: stored definitions (every revision kept) that the publisher turns into Airflow DAGs."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from sqlalchemy.orm import Session

from connections.types import is_sqlite
from dag_factory.exceptions import DefinitionError
from dag_factory.spec import PipelineDefinition, validate_definition
from dag_factory.spec.models import CONNECTION_TYPES_BY_STEP, connection_names_of
from service import naming
from service.audit.service import record
from service.auth import Principal
from service.connections import repository as connection_repo
from service.errors import Conflict, NotFound, ValidationFailed
from service.merge_patch import patched
from service.pipelines import repository
from service.pipelines.assets import check_data_schedule
from service.pipelines.models import Pipeline, PipelineVersion
from service.pipelines.schemas import PipelineIn, PipelineOut

# CREATED: stored, waiting for the publisher. DEPLOYING: file written, Airflow parsing it.
# ACTIVE: Airflow serves the DAG. INVALID: Airflow (or the service) could not load it; see statusDetail.
CREATED, DEPLOYING, ACTIVE, INVALID = "CREATED", "DEPLOYING", "ACTIVE", "INVALID"
STATUSES = (CREATED, DEPLOYING, ACTIVE, INVALID)


class TemplateLink(Protocol):
    """What a pipeline created from a template asks of the templates feature. Templates build on pipelines, so
    pipelines are handed it (service.templates.service is one; service/main.py wires it) instead of importing it."""

    def check_controls(self, session: Session, pipeline: Pipeline, definition: dict[str, Any]) -> None:
        """400 when an update drops a compliance control the template put in."""

    def provenance(self, session: Session, pipeline: Pipeline) -> dict[str, Any] | None:
        """{id, version, latestVersion, behind} of a pipeline created from a template."""


def parse_definition(data: dict[str, Any]) -> PipelineDefinition:
    try:
        return validate_definition(data)
    except DefinitionError as exc:
        details = [
            {"path": f"definition.{e['path']}" if e["path"] else "definition", "message": e["message"]}
            for e in exc.errors
        ]
        raise ValidationFailed(f"{details[0]['path']}: {details[0]['message']}", details=details) from None


def _check_connections(session: Session, tenant_id: str, definition: PipelineDefinition) -> None:
    known = {c.name: c.type for c in connection_repo.list_all(session, tenant_id)}
    details = []
    hint = "create it first with POST /v1/pipelines/connections"
    for group in ("sources", "sinks"):
        for name, item in getattr(definition, group).items():
            connection = getattr(item, "connection", None)  # a file source or sink has none
            if connection is None:
                continue
            if connection not in known:
                message = f"unknown connection '{connection}' ({hint})"
                details.append({"path": f"definition.{group}.{name}.connection", "message": message})
            elif known[connection] not in CONNECTION_TYPES_BY_STEP.get(item.type, (known[connection],)):
                fits = " or ".join(CONNECTION_TYPES_BY_STEP[item.type])
                message = f"connection '{connection}' is of type {known[connection]}; a {item.type} step needs {fits}"
                details.append({"path": f"definition.{group}.{name}.connection", "message": message})
    staging = definition.orchestration.staging_connection
    if staging and staging not in known:
        details.append(
            {"path": "definition.orchestration.staging_connection", "message": f"unknown connection '{staging}'"}
        )
    elif staging and known[staging] not in CONNECTION_TYPES_BY_STEP["postgres"]:
        message = f"connection '{staging}' is of type {known[staging]}: datasets are staged in a PostgreSQL database"
        details.append({"path": "definition.orchestration.staging_connection", "message": message})
    notify = definition.orchestration.on_failure.connection if definition.orchestration.on_failure else None
    if notify and known.get(notify) != "http":
        where = "unknown connection" if notify not in known else f"connection of type {known[notify]}"
        message = f"{where} '{notify}': failure notifications go to an http connection"
        details.append({"path": "definition.orchestration.on_failure.connection", "message": message})
    if details:
        raise ValidationFailed(f"{details[0]['path']}: {details[0]['message']}", details=details)


def _check_sqlite(session: Session, tenant_id: str, definition: PipelineDefinition) -> None:
    """A SQLite file (a `sql` connection) is only read or written by sql steps: it cannot hold the staging
    schema (checks on its tables are fine: great-expectations reads any SQL database)."""
    sqlite = {c.name for c in connection_repo.list_all(session, tenant_id) if is_sqlite(c.type, c.port)}
    if not sqlite:
        return
    details = []
    for group in ("sources", "sinks"):
        for name, item in getattr(definition, group).items():
            if getattr(item, "connection", None) in sqlite and item.type != "sql":
                message = f"connection '{item.connection}' is a SQLite file: use type sql"
                details.append({"path": f"definition.{group}.{name}.connection", "message": message})
    staging = definition.staging_connection()
    if staging in sqlite:
        where = "orchestration.staging_connection" if definition.orchestration.staging_connection else None
        if where is None:
            first = next(n for n, s in definition.sinks.items() if getattr(s, "connection", None) == staging)
            where = f"sinks.{first}.connection"
        message = (
            f"datasets are staged in PostgreSQL, and connection '{staging}' is a SQLite file: "
            "set orchestration.staging_connection to a PostgreSQL connection"
        )
        details.append({"path": f"definition.{where}", "message": message})
    if details:
        raise ValidationFailed(f"{details[0]['path']}: {details[0]['message']}", details=details)


def definition_schema() -> dict[str, Any]:
    return PipelineDefinition.model_json_schema()


def validate(
    session: Session, tenant_id: str, data: dict[str, Any], *, pipeline_id: str | None = None
) -> PipelineDefinition:
    """Everything a create checks about a definition: schema, references, the tenant's connections, and the
    data schedule (for an update, `pipeline_id`: the pipeline's stored sinks are not another pipeline's)."""
    definition = parse_definition(data)
    _check_connections(session, tenant_id, definition)
    _check_sqlite(session, tenant_id, definition)
    check_data_schedule(session, tenant_id, definition, pipeline_id=pipeline_id)
    return definition


def get_or_404(session: Session, tenant_id: str, pipeline_id: str) -> Pipeline:
    pipeline = repository.get(session, tenant_id, pipeline_id)
    if pipeline is None:
        raise NotFound(f"pipeline '{pipeline_id}' not found")
    return pipeline


def _add_version(pipeline: Pipeline, body: PipelineIn, revision: int, actor: str) -> None:
    pipeline.versions.append(
        PipelineVersion(
            revision=revision,
            version=body.version,
            description=body.description,
            tags=list(body.tags),
            definition=body.definition,
            created_by=actor,
        )
    )


def create(session: Session, principal: Principal, body: PipelineIn) -> Pipeline:
    validate(session, principal.tenant_id, body.definition)
    if repository.by_name(session, principal.tenant_id, body.name):
        raise Conflict(
            f"a pipeline named '{body.name}' already exists", details=[{"path": "name", "message": "duplicate"}]
        )
    pipeline = Pipeline(
        id="pl-" + uuid.uuid4().hex[:20],
        tenant_id=principal.tenant_id,
        name=body.name,
        dag_id=naming.dag_id(principal.tenant_id, body.name),
        description=body.description,
        tags=list(body.tags),
        version=body.version,
        revision=1,
        status=CREATED,
        created_by=principal.subject,
    )
    _add_version(pipeline, body, 1, principal.subject)
    session.add(pipeline)
    session.flush()
    record(session, principal, "create", "pipeline", pipeline.id, after=audit_view(pipeline, body.definition))
    return pipeline


def update(
    session: Session, principal: Principal, pipeline_id: str, body: PipelineIn, *, templates: TemplateLink
) -> Pipeline:
    pipeline = get_or_404(session, principal.tenant_id, pipeline_id)
    if body.name != pipeline.name:
        # The Airflow DAG id (and so the run history in Airflow) is derived from the name at creation.
        raise ValidationFailed(
            "a pipeline cannot be renamed", details=[{"path": "name", "message": f"must stay '{pipeline.name}'"}]
        )
    validate(session, principal.tenant_id, body.definition, pipeline_id=pipeline.id)
    if pipeline.template_id:
        templates.check_controls(session, pipeline, body.definition)  # compliance controls cannot be edited away
    before = audit_view(pipeline, repository.current_version(session, pipeline).definition)
    pipeline.revision += 1
    _add_version(pipeline, body, pipeline.revision, principal.subject)
    pipeline.version = body.version
    pipeline.description = body.description
    pipeline.tags = list(body.tags)
    pipeline.status = CREATED
    pipeline.status_detail = None
    session.flush()
    after = audit_view(pipeline, body.definition)
    record(session, principal, "update", "pipeline", pipeline.id, before=before, after=after)
    return pipeline


def delete(session: Session, principal: Principal, pipeline_id: str) -> Pipeline:
    """Remove the pipeline with its versions (and executions); the caller removes its DAG file after commit."""
    pipeline = get_or_404(session, principal.tenant_id, pipeline_id)
    before = audit_view(pipeline, repository.current_version(session, pipeline).definition)
    session.delete(pipeline)
    session.flush()
    record(session, principal, "delete", "pipeline", pipeline.id, before=before)
    return pipeline


def audit_view(pipeline: Pipeline, definition: dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps of a pipeline's revision (a definition names its connections, holds no secret)."""
    return {
        "name": pipeline.name,
        "revision": pipeline.revision,
        "version": pipeline.version,
        "description": pipeline.description,
        "tags": list(pipeline.tags),
        "definition": definition,
    }


def put_body(session: Session, pipeline: Pipeline) -> dict[str, Any]:
    """The PUT body that would leave the pipeline as it is: what a merge patch applies to."""
    body = {
        "name": pipeline.name,
        "version": pipeline.version,
        "description": pipeline.description,
        "definition": repository.current_version(session, pipeline).definition,
        "tags": list(pipeline.tags),
    }
    return {k: v for k, v in body.items() if v is not None}


def patch(
    session: Session, principal: Principal, pipeline_id: str, changes: dict[str, Any], *, templates: TemplateLink
) -> Pipeline:
    """A merge patch: the merged document is a PUT body, validated and stored by `update`."""
    pipeline = get_or_404(session, principal.tenant_id, pipeline_id)
    body = patched(PipelineIn, put_body(session, pipeline), changes)
    return update(session, principal, pipeline_id, body, templates=templates)


def to_out(
    session: Session, pipeline: Pipeline, with_definition: bool = True, *, templates: TemplateLink
) -> PipelineOut:
    out = PipelineOut(
        pipeline_id=pipeline.id,
        name=pipeline.name,
        version=pipeline.version,
        revision=pipeline.revision,
        description=pipeline.description,
        tags=pipeline.tags,
        status=pipeline.status,
        status_detail=pipeline.status_detail,
        dag_id=pipeline.dag_id,
        created_at=pipeline.created_at,
        updated_at=pipeline.updated_at,
        deployed_at=pipeline.deployed_at,
    )
    if with_definition:
        out.definition = repository.current_version(session, pipeline).definition
    if pipeline.template_id:
        out.template = templates.provenance(session, pipeline)
    return out


def connection_users(session: Session, tenant_id: str, name: str) -> list[str]:
    """Names of the tenant's pipelines whose current definition uses connection `name` (a connection in use is
    neither deleted nor turned into another kind: service.connections is handed this, see service/main.py)."""
    found = []
    for pipeline, definition in repository.tenant_definitions(session, tenant_id):
        if name in connection_names_of(definition):
            found.append(pipeline.name)
    return sorted(found)
