"""Templates: the catalogue a tenant sees (shipped + its own), pipelines created from them, provenance."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.audit.service import record
from service.auth import Principal
from service.errors import Conflict, NotFound, ValidationFailed
from service.pipelines import repository as pipeline_repo
from service.pipelines import service as pipelines
from service.pipelines.models import Pipeline
from service.pipelines.schemas import PipelineIn
from service.templates import catalog
from service.templates.catalog import Template, TemplateError
from service.templates.models import TenantTemplate
from service.templates.schemas import CreateFromTemplateIn, TemplateDiffOut, TemplateOut, TemplateSummary


def semver_key(version: str) -> tuple[int, int, int, int, str]:
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?", version)
    if not m:
        return (0, 0, 0, 0, version)
    major, minor, patch, pre = m.groups()
    # A pre-release sorts before its release.
    return (int(major), int(minor), int(patch), 0 if pre else 1, pre or "")


def _bad(exc: TemplateError, prefix: str = "") -> ValidationFailed:
    details = [{"path": prefix + e["path"], "message": e["message"]} for e in exc.errors]
    return ValidationFailed(f"{details[0]['path']}: {details[0]['message']}", details=details)


# ------------------------------------------------------------------------------------------ catalogue


def _tenant_rows(session: Session, tenant_id: str, template_id: str | None = None) -> list[TenantTemplate]:
    stmt = select(TenantTemplate).where(TenantTemplate.tenant_id == tenant_id)
    if template_id is not None:
        stmt = stmt.where(TenantTemplate.template_id == template_id)
    return list(session.scalars(stmt))


def _latest_tenant(session: Session, tenant_id: str) -> dict[str, TenantTemplate]:
    latest: dict[str, TenantTemplate] = {}
    for row in _tenant_rows(session, tenant_id):
        current = latest.get(row.template_id)
        if current is None or semver_key(row.version) > semver_key(current.version):
            latest[row.template_id] = row
    return latest


def catalogue(session: Session, tenant_id: str) -> dict[str, tuple[Template, str]]:
    """Every template the tenant sees, newest version: id -> (template, owner 'shipped' | 'tenant')."""
    found: dict[str, tuple[Template, str]] = {tid: (t, "shipped") for tid, t in catalog.shipped().items()}
    for tid, row in _latest_tenant(session, tenant_id).items():
        found[tid] = (Template.model_validate(row.document), "tenant")
    return found


def get(session: Session, tenant_id: str, template_id: str, version: str | None = None) -> tuple[Template, str]:
    if version is not None:
        for row in _tenant_rows(session, tenant_id, template_id):
            if row.version == version:
                return Template.model_validate(row.document), "tenant"
    found = catalogue(session, tenant_id).get(template_id)
    if found is None:
        raise NotFound(f"template '{template_id}' not found")
    if version is not None and found[0].version != version:
        raise NotFound(f"template '{template_id}' has no version {version} (the catalogue ships {found[0].version})")
    return found


def search(
    session: Session, tenant_id: str, *, industry: str | None, compliance: str | None, q: str | None
) -> list[TemplateSummary]:
    wanted_tags = {c.strip().upper() for c in (compliance or "").split(",") if c.strip()}
    words = (q or "").lower().split()
    items = []
    for template, owner in sorted(catalogue(session, tenant_id).values(), key=lambda x: x[0].id):
        if industry and template.industry != industry.lower():
            continue
        if wanted_tags and not wanted_tags <= {c.upper() for c in template.compliance}:
            continue
        text = " ".join([template.id, template.name, template.description, *template.tags]).lower()
        if any(w not in text for w in words):
            continue
        items.append(TemplateSummary(**template.summary(), owner=owner))
    return items


def to_out(session: Session, tenant_id: str, template: Template, owner: str) -> TemplateOut:
    versions = sorted({r.version for r in _tenant_rows(session, tenant_id, template.id)}, key=semver_key)
    return TemplateOut(
        **template.summary(),
        owner=owner,
        sensitive={c: v.model_dump(exclude_none=True) for c, v in template.sensitive_columns().items()},
        data_subject=template.data_subject.model_dump(exclude_none=True) if template.data_subject else None,
        definition=template.definition,
        versions=versions if owner == "tenant" else [template.version],
    )


def add_tenant_template(session: Session, principal: Principal, document: dict[str, Any]) -> tuple[Template, str]:
    """A tenant's own template (or a new version of it): id `<tenant>/<name>` or `custom/<name>`."""
    try:
        template = catalog.parse(document)
    except TemplateError as exc:
        raise _bad(exc) from None
    namespace = template.id.split("/", 1)[0]
    if namespace not in (principal.tenant_id, "custom"):
        message = f"a tenant template's id is '{principal.tenant_id}/<name>' or 'custom/<name>'"
        raise ValidationFailed(message, details=[{"path": "id", "message": message}])
    if template.id in catalog.shipped():
        raise Conflict(f"'{template.id}' is a shipped template", details=[{"path": "id", "message": "taken"}])
    existing = _tenant_rows(session, principal.tenant_id, template.id)
    if any(r.version == template.version for r in existing):
        raise Conflict(
            f"template '{template.id}' already has version {template.version}",
            details=[{"path": "version", "message": "exists; publish a new version"}],
        )
    if existing and semver_key(template.version) < max(semver_key(r.version) for r in existing):
        raise ValidationFailed(
            "a new version must be newer than the stored ones",
            details=[{"path": "version", "message": "older than the latest stored version"}],
        )
    try:  # the defaults must render into a valid definition, as the shipped templates do (tests)
        catalog.render(template, catalog.stand_in_values(template))
    except TemplateError as exc:
        raise _bad(exc) from None
    document = template.model_dump(mode="json", by_alias=True, exclude_none=True)
    session.add(
        TenantTemplate(
            tenant_id=principal.tenant_id,
            template_id=template.id,
            version=template.version,
            document=document,
            created_by=principal.subject,
        )
    )
    session.flush()
    # A new version of an existing template is an update of it; the entry carries the version's document.
    action = "update" if existing else "create"
    before = {"version": max((r.version for r in existing), key=semver_key)} if existing else None
    record(session, principal, action, "template", template.id, before=before, after=document)
    return template, "tenant"


# ------------------------------------------------------------------------------------------ pipelines


def create_pipeline(session: Session, principal: Principal, template_id: str, body: CreateFromTemplateIn) -> Pipeline:
    """Render the template and create the pipeline exactly as POST /v1/pipelines does, plus its provenance."""
    template, _ = get(session, principal.tenant_id, template_id)
    try:
        definition, _ = catalog.render(template, body.parameters, body.customizations)
    except TemplateError as exc:
        raise _bad(exc) from None
    tags = [template.industry, "template", *template.compliance, *body.tags]
    request = PipelineIn(
        name=body.pipeline_name,
        version=template.version,
        description=body.description or template.description,
        definition=definition,
        tags=list(dict.fromkeys(tags))[:20],
    )
    pipeline = pipelines.create(session, principal, request)
    pipeline.template_id = template.id
    pipeline.template_version = template.version
    pipeline.template_inputs = {"parameters": body.parameters, "customizations": body.customizations}
    session.flush()
    return pipeline


def provenance(session: Session, pipeline: Pipeline) -> dict[str, Any] | None:
    """{id, version, latestVersion, behind} of a pipeline created from a template (None otherwise)."""
    if not pipeline.template_id:
        return None
    found = catalogue(session, pipeline.tenant_id).get(pipeline.template_id)
    latest = found[0].version if found else None
    behind = latest is not None and semver_key(latest) > semver_key(pipeline.template_version or "0.0.0")
    return {"id": pipeline.template_id, "version": pipeline.template_version, "latestVersion": latest, "behind": behind}


def diff(session: Session, tenant_id: str, pipeline_id: str) -> TemplateDiffOut:
    pipeline = pipelines.get_or_404(session, tenant_id, pipeline_id)
    info = provenance(session, pipeline)
    if info is None:
        raise NotFound(f"pipeline '{pipeline_id}' was not created from a template")
    current = pipeline_repo.current_version(session, pipeline).definition
    out = TemplateDiffOut(
        pipeline_id=pipeline.id,
        template_id=info["id"],
        version=info["version"],
        latest_version=info["latestVersion"],
        behind=info["behind"],
        changes=[],
    )
    if info["latestVersion"] is None:
        return out
    template, _ = get(session, tenant_id, pipeline.template_id or "")
    inputs = pipeline.template_inputs or {}
    try:
        latest, _ = catalog.render(template, inputs.get("parameters") or {}, inputs.get("customizations") or {})
    except TemplateError as exc:  # e.g. the new version needs a parameter the pipeline was not given
        out.render_error = exc.errors
        return out
    out.changes = json_diff(current, latest)
    return out


def json_diff(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """JSON-Patch-like operations (add / remove / replace, JSON Pointer paths) that turn `old` into `new`."""
    if isinstance(old, dict) and isinstance(new, dict):
        ops: list[dict[str, Any]] = []
        for key in old:
            here = f"{path}/{_pointer(key)}"
            if key not in new:
                ops.append({"op": "remove", "path": here, "old": old[key]})
            else:
                ops += json_diff(old[key], new[key], here)
        ops += [{"op": "add", "path": f"{path}/{_pointer(k)}", "value": new[k]} for k in new if k not in old]
        return ops
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [op for i, (a, b) in enumerate(zip(old, new, strict=True)) for op in json_diff(a, b, f"{path}/{i}")]
    if old == new and type(old) is type(new):
        return []
    return [{"op": "replace", "path": path or "/", "old": old, "value": new}]


def _pointer(key: str) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def check_controls(session: Session, pipeline: Pipeline, definition: dict[str, Any]) -> None:
    """An update of a pipeline created from a template keeps the compliance controls (400 naming what is gone)."""
    if not pipeline.template_id:
        return
    try:
        template, _ = get(session, pipeline.tenant_id, pipeline.template_id, pipeline.template_version)
    except NotFound:
        try:  # a shipped template keeps only its newest version: hold the pipeline to that one's controls
            template, _ = get(session, pipeline.tenant_id, pipeline.template_id)
        except NotFound:
            return  # the template is gone: nothing to hold the pipeline to
    from service.templates.compliance import missing_controls

    errors = missing_controls(template, definition)
    if errors:
        raise ValidationFailed(f"{errors[0]['path']}: {errors[0]['message']}", details=errors)
