"""GET/acknowledge alerts; CRUD of the tenant's alert webhooks (/v1/pipelines/monitoring/...)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from connections.network import NetworkPolicy
from service.auth import CurrentPrincipal
from service.connections.service import network_policy
from service.db import DbSession
from service.deps import VaultDep
from service.monitoring import repository, service
from service.monitoring.schemas import AcknowledgeIn, AlertOut, DeliveryOut, WebhookIn, WebhookOut, WebhookPatch
from service.schemas import Page, PageNumber, PageSize

router = APIRouter(prefix="/v1/pipelines/monitoring", tags=["monitoring"])

# Ids are short and printable: anything else names nothing (and PostgreSQL refuses NUL in text: a 500).
ID_PATTERN = r"^[^\x00-\x1f\x7f]{1,64}$"
AlertId = Annotated[str, Path(pattern=ID_PATTERN)]
WebhookId = Annotated[str, Path(pattern=ID_PATTERN)]


def _policy(request: Request) -> NetworkPolicy:
    return network_policy(request.app.state.settings)


@router.get("/alerts", response_model=Page[AlertOut], response_model_by_alias=True)
def list_alerts(
    principal: CurrentPrincipal,
    session: DbSession,
    severity: Annotated[str | None, Query(description="CRITICAL | WARNING | INFO")] = None,
    status: Annotated[str | None, Query(description="OPEN | ACKNOWLEDGED | RESOLVED")] = None,
    pipeline_id: Annotated[str | None, Query(alias="pipelineId", pattern=ID_PATTERN)] = None,
    type: Annotated[str | None, Query(description="RUN_FAILED, QUALITY_WARNING, ...")] = None,  # noqa: A002
    page: PageNumber = 0,
    size: PageSize = 20,
) -> Page[AlertOut]:
    """The tenant's alerts, newest first."""
    service.check_filters(severity, status, type)
    rows, total = repository.list_page(
        session,
        principal.tenant_id,
        severity=severity,
        status=status,
        pipeline_id=pipeline_id,
        alert_type=type,
        offset=page * size,
        limit=size,
    )
    return Page[AlertOut](items=[service.alert_out(a) for a in rows], total=total, page=page, size=size)


@router.get("/alerts/{alert_id}", response_model=AlertOut, response_model_by_alias=True)
def get_alert(alert_id: AlertId, principal: CurrentPrincipal, session: DbSession) -> AlertOut:
    return service.alert_out(repository.get_alert(session, principal.tenant_id, alert_id))


@router.post("/alerts/{alert_id}/acknowledge", response_model=AlertOut, response_model_by_alias=True)
def acknowledge_alert(
    alert_id: AlertId, principal: CurrentPrincipal, session: DbSession, body: AcknowledgeIn | None = None
) -> AlertOut:
    """Editor or admin; a RESOLVED alert is 409. Recorded in the audit log; the webhooks get alert.acknowledged."""
    alert = service.acknowledge(session, principal, alert_id, body.note if body else None)
    return service.alert_out(alert)


@router.get("/webhooks", response_model=list[WebhookOut], response_model_by_alias=True)
def list_webhooks(principal: CurrentPrincipal, session: DbSession) -> list[WebhookOut]:
    return [service.webhook_out(h) for h in repository.webhooks(session, principal.tenant_id)]


@router.post("/webhooks", status_code=201, response_model=WebhookOut, response_model_by_alias=True)
def create_webhook(
    body: WebhookIn, principal: CurrentPrincipal, session: DbSession, vault: VaultDep, request: Request
) -> WebhookOut:
    """Editor or admin. The secret signs each delivery; it is stored encrypted and never returned."""
    return service.webhook_out(service.create_webhook(session, principal, body, vault, _policy(request)))


@router.get("/webhooks/{webhook_id}", response_model=WebhookOut, response_model_by_alias=True)
def get_webhook(webhook_id: WebhookId, principal: CurrentPrincipal, session: DbSession) -> WebhookOut:
    return service.webhook_out(repository.get_webhook(session, principal.tenant_id, webhook_id))


@router.patch("/webhooks/{webhook_id}", response_model=WebhookOut, response_model_by_alias=True)
def update_webhook(
    webhook_id: WebhookId,
    body: WebhookPatch,
    principal: CurrentPrincipal,
    session: DbSession,
    vault: VaultDep,
    request: Request,
) -> WebhookOut:
    hook = service.update_webhook(session, principal, webhook_id, body, vault, _policy(request))
    return service.webhook_out(hook)


@router.delete("/webhooks/{webhook_id}", status_code=204)
def delete_webhook(webhook_id: WebhookId, principal: CurrentPrincipal, session: DbSession) -> Response:
    service.delete_webhook(session, principal, webhook_id)
    return Response(status_code=204)


@router.get("/webhooks/{webhook_id}/deliveries", response_model=list[DeliveryOut], response_model_by_alias=True)
def webhook_deliveries(webhook_id: WebhookId, principal: CurrentPrincipal, session: DbSession) -> list[DeliveryOut]:
    """The webhook's latest 50 deliveries, newest first: status, attempts, the last error."""
    repository.get_webhook(session, principal.tenant_id, webhook_id)
    return [
        DeliveryOut(
            delivery_id=d.id,
            alert_id=d.alert_id,
            event=d.event,
            status=d.status,
            attempts=d.attempts,
            next_attempt_at=d.next_attempt_at,
            last_error=d.last_error,
            response_status=d.response_status,
            created_at=d.created_at,
            delivered_at=d.delivered_at,
        )
        for d in repository.deliveries_of(session, principal.tenant_id, webhook_id)
    ]
