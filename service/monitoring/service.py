"""Alerts the service raises about pipelines, their acknowledgement and automatic resolution, and the tenants'
webhooks that receive them.

One unresolved alert per condition (the partial unique index uq_alerts_open_condition): raising a condition
that already has an open or acknowledged alert does nothing. The conditions and what resolves them:
- RUN_FAILED (CRITICAL), key RUN_FAILED:<pipelineId>: a run failed; the pipeline's next successful run resolves it.
- QUALITY_WARNING (WARNING), key QUALITY_WARNING:<pipelineId>: a `warn` check failed; resolved by the next
  successful run whose warn checks all pass.
- DURATION_ANOMALY (WARNING), key DURATION_ANOMALY:<pipelineId>: a successful run took longer than
  median + 3 x MAD of the pipeline's previous (up to) 20 successful runs, with at least 5 of them; the MAD is
  taken as at least 5 % of the median (identical durations would otherwise flag any run a second slower).
  Resolved by the next successful run within that bound.
- SLA_MISSED (CRITICAL: the data is late now, someone downstream is waiting), key SLA_MISSED:<executionId>:
  a run still unfinished `orchestration.sla_seconds` after it was queued (periodic check); resolved when that
  run finishes.
- BUDGET_80 (WARNING) / BUDGET_100 (CRITICAL), key BUDGET_<n>:<tenant|pipelineId>:<YYYY-MM>: the month's cost
  reached 80 % / 100 % of the tenant's or a pipeline's monthly budget (periodic check); resolved when a new
  month starts, or the budget is raised above the spend or removed.
Run-end conditions are raised in the transaction that stores the execution's new status
(service.executions.events); every raise, acknowledge and resolve queues one delivery per matching webhook in
the same transaction (service.monitoring.delivery)."""

from __future__ import annotations

import json
import logging
import statistics
import uuid
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from connections.network import NetworkDenied, NetworkPolicy
from service.audit.service import record
from service.auth import Principal
from service.config import RateCard
from service.cost import service as cost
from service.cost.models import Budget
from service.db import session_scope, utcnow
from service.errors import Conflict, ValidationFailed
from service.executions.models import COMPLETED, FAILED, Execution
from service.monitoring import delivery, repository
from service.monitoring.models import (
    ACKNOWLEDGED,
    ALERT_STATUSES,
    ALERT_TYPES,
    BUDGET_80,
    BUDGET_100,
    CRITICAL,
    DURATION_ANOMALY,
    OPEN,
    QUALITY_WARNING,
    RESOLVED,
    RUN_FAILED,
    SEVERITIES,
    SLA_MISSED,
    WARNING,
    Alert,
    AlertDelivery,
    AlertWebhook,
)
from service.monitoring.repository import PENDING
from service.monitoring.schemas import AlertOut, WebhookIn, WebhookOut, WebhookPatch
from service.secrets import Vault

log = logging.getLogger(__name__)

HISTORY_RUNS, MIN_HISTORY_RUNS, MAD_FACTOR, MIN_MAD_SHARE = 20, 5, 3.0, 0.05
BUDGET_LEVELS = ((BUDGET_100, Decimal(1), CRITICAL), (BUDGET_80, Decimal("0.8"), WARNING))


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


# -- the API's views -------------------------------------------------------------------------------------
def alert_out(alert: Alert) -> AlertOut:
    return AlertOut(
        alert_id=alert.id,
        pipeline_id=alert.pipeline_id,
        execution_id=alert.execution_id,
        severity=alert.severity,
        status=alert.status,
        type=alert.type,
        message=alert.message,
        raised_at=alert.raised_at,
        acknowledged_by=alert.acknowledged_by,
        acknowledged_at=alert.acknowledged_at,
        acknowledged_note=alert.acknowledged_note,
        resolved_at=alert.resolved_at,
    )


def webhook_out(hook: AlertWebhook) -> WebhookOut:
    return WebhookOut(
        webhook_id=hook.id,
        name=hook.name,
        url=hook.url,
        secret_set=True,
        severities=hook.severities,
        enabled=hook.enabled,
        created_by=hook.created_by,
        created_at=hook.created_at,
        updated_at=hook.updated_at,
    )


def check_filters(severity: str | None, status: str | None, alert_type: str | None) -> None:
    for name, value, allowed in (
        ("severity", severity, SEVERITIES),
        ("status", status, ALERT_STATUSES),
        ("type", alert_type, ALERT_TYPES),
    ):
        if value is not None and value not in allowed:
            raise ValidationFailed(
                f"{name} must be one of {', '.join(allowed)}",
                details=[{"path": name, "message": f"must be one of {list(allowed)}"}],
            )


# -- raise, resolve, acknowledge ---------------------------------------------------------------------------
def raise_alert(
    session: Session,
    *,
    tenant_id: str,
    alert_type: str,
    condition_key: str,
    severity: str,
    message: str,
    pipeline_id: str | None = None,
    execution_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> Alert | None:
    """The new alert, or None when the condition already has an unresolved one."""
    if repository.open_alert(session, tenant_id, condition_key) is not None:
        return None
    alert = Alert(
        id=_new_id("alert"),
        tenant_id=tenant_id,
        pipeline_id=pipeline_id,
        execution_id=execution_id,
        type=alert_type,
        condition_key=condition_key,
        severity=severity,
        status=OPEN,
        message=message[:4000],
        details=details or {},
        raised_at=utcnow(),
    )
    try:
        with session.begin_nested():  # a concurrent raise of the same condition: the unique index decides
            session.add(alert)
            session.flush()
    except IntegrityError:
        return None
    enqueue(session, alert, "alert.raised")
    return alert


def resolve(session: Session, tenant_id: str, condition_key: str, reason: str) -> Alert | None:
    alert = repository.open_alert(session, tenant_id, condition_key)
    if alert is None:
        return None
    alert.status, alert.resolved_at = RESOLVED, utcnow()
    alert.details = {**(alert.details or {}), "resolution": reason}
    session.flush()
    enqueue(session, alert, "alert.resolved")
    return alert


def acknowledge(session: Session, principal: Principal, alert_id: str, note: str | None) -> Alert:
    alert = repository.get_alert(session, principal.tenant_id, alert_id, for_update=True)
    if alert.status == RESOLVED:
        raise Conflict(f"alert '{alert_id}' is already RESOLVED and cannot be acknowledged")
    before = {"status": alert.status, "acknowledgedBy": alert.acknowledged_by}
    alert.status, alert.acknowledged_by, alert.acknowledged_at = ACKNOWLEDGED, principal.subject, utcnow()
    alert.acknowledged_note = note
    session.flush()
    after = {"status": alert.status, "acknowledgedBy": alert.acknowledged_by, "note": note}
    record(session, principal, "acknowledge", "alert", alert.id, before=before, after=after)
    enqueue(session, alert, "alert.acknowledged")
    return alert


def enqueue(session: Session, alert: Alert, event: str) -> int:
    """One delivery per enabled webhook of the tenant that takes the alert's severity, in this transaction."""
    hooks = [
        h
        for h in repository.webhooks(session, alert.tenant_id)
        if h.enabled and (not h.severities or alert.severity in h.severities)
    ]
    for hook in hooks:
        delivery_id = _new_id("dlv")
        body = {
            "event": event,
            "deliveryId": delivery_id,
            "occurredAt": utcnow().isoformat(),
            "tenantId": alert.tenant_id,
            "alert": alert_out(alert).model_dump(mode="json", by_alias=True),
        }
        session.add(
            AlertDelivery(
                id=delivery_id,
                tenant_id=alert.tenant_id,
                alert_id=alert.id,
                webhook_id=hook.id,
                event=event,
                body=json.dumps(body, separators=(",", ":")),
                status=PENDING,
                attempts=0,
                next_attempt_at=utcnow(),
            )
        )
    if hooks:
        session.flush()
        delivery.wake_after_commit(session)
    return len(hooks)


# -- run-end conditions (the executions finished hook) -------------------------------------------------------
def on_execution_finished(session: Session, ex: Execution, previous: str) -> None:
    """Registered with service.executions.events: runs in the transaction that stores the new status."""
    resolve(session, ex.tenant_id, f"{SLA_MISSED}:{ex.id}", f"execution {ex.id} finished {ex.status}")
    _quality(session, ex)
    if ex.status == FAILED:
        raise_alert(
            session,
            tenant_id=ex.tenant_id,
            alert_type=RUN_FAILED,
            condition_key=f"{RUN_FAILED}:{ex.pipeline_id}",
            severity=CRITICAL,
            message=f"execution {ex.id} failed: {ex.error_message or 'no error message'}",
            pipeline_id=ex.pipeline_id,
            execution_id=ex.id,
        )
    elif ex.status == COMPLETED:
        resolve(session, ex.tenant_id, f"{RUN_FAILED}:{ex.pipeline_id}", f"execution {ex.id} completed")
        _duration(session, ex)


def _quality(session: Session, ex: Execution) -> None:
    failed = [
        r
        for r in ex.quality_results or []
        if isinstance(r, dict) and r.get("severity") == "warn" and r.get("success") is False
    ]
    key = f"{QUALITY_WARNING}:{ex.pipeline_id}"
    if failed:
        names = ", ".join(str(r.get("name") or r.get("expectation")) for r in failed[:10])
        raise_alert(
            session,
            tenant_id=ex.tenant_id,
            alert_type=QUALITY_WARNING,
            condition_key=key,
            severity=WARNING,
            message=f"execution {ex.id}: {len(failed)} warn-level quality check(s) failed: {names}",
            pipeline_id=ex.pipeline_id,
            execution_id=ex.id,
            details={"checks": [r.get("name") for r in failed]},
        )
    elif ex.status == COMPLETED:
        resolve(session, ex.tenant_id, key, f"execution {ex.id} passed its warn checks")


def anomaly_bound(history: list[float]) -> float | None:
    """The duration above which a run is anomalous: median + 3 x max(MAD, 5 % of the median); None with
    fewer than MIN_HISTORY_RUNS runs of history."""
    if len(history) < MIN_HISTORY_RUNS:
        return None
    median = statistics.median(history)
    mad = statistics.median(abs(x - median) for x in history)
    return median + MAD_FACTOR * max(mad, MIN_MAD_SHARE * median)


def _duration(session: Session, ex: Execution) -> None:
    if ex.finished_at is None:
        return
    seconds = (ex.finished_at - (ex.started_at or ex.submitted_at)).total_seconds()
    bound = anomaly_bound(repository.recent_durations(session, ex, HISTORY_RUNS))
    key = f"{DURATION_ANOMALY}:{ex.pipeline_id}"
    if bound is not None and seconds > bound:
        raise_alert(
            session,
            tenant_id=ex.tenant_id,
            alert_type=DURATION_ANOMALY,
            condition_key=key,
            severity=WARNING,
            message=(
                f"execution {ex.id} took {seconds:.1f} s, above the pipeline's usual bound of {bound:.1f} s "
                f"(median + 3 x MAD of its last {HISTORY_RUNS} successful runs)"
            ),
            pipeline_id=ex.pipeline_id,
            execution_id=ex.id,
            details={"durationSeconds": seconds, "boundSeconds": bound},
        )
    else:
        resolve(session, ex.tenant_id, key, f"execution {ex.id} took {seconds:.1f} s")


# -- periodic conditions (the `alert-conditions` worker) ---------------------------------------------------
def sla_step(session: Session, now: datetime | None = None) -> int:
    """Raise SLA_MISSED for every unfinished run past its definition's `orchestration.sla_seconds`."""
    now = now or utcnow()
    raised = 0
    for ex, definition in repository.unfinished_with_definition(session):
        sla = (definition.get("orchestration") or {}).get("sla_seconds")
        if not isinstance(sla, int) or isinstance(sla, bool) or sla <= 0:
            continue
        late = (now - ex.submitted_at).total_seconds()
        if late < sla:
            continue
        alert = raise_alert(
            session,
            tenant_id=ex.tenant_id,
            alert_type=SLA_MISSED,
            condition_key=f"{SLA_MISSED}:{ex.id}",
            severity=CRITICAL,
            message=f"execution {ex.id} is still {ex.status} {int(late)} s after it was queued (SLA {sla} s)",
            pipeline_id=ex.pipeline_id,
            execution_id=ex.id,
            details={"slaSeconds": sla},
        )
        raised += alert is not None
    return raised


def budget_step(session: Session, rates: RateCard, now: datetime | None = None) -> int:
    """Raise BUDGET_80 / BUDGET_100 where this month's spend reached the share of a budget; resolve the
    alerts of earlier months, of removed budgets, and of budgets raised above the spend."""
    now = now or utcnow()
    month = f"{now:%Y-%m}"
    raised = 0
    budgets: dict[str, list[Budget]] = defaultdict(list)
    for b in session.scalars(select(Budget)):
        budgets[b.tenant_id].append(b)
    current: set[tuple[str, str]] = set()
    for tenant_id, scoped in budgets.items():
        spent = cost.spent_by_pipeline(
            session, tenant_id, pipeline_id=None, since=cost.month_start(now), until=now, rates=rates, now=now
        )
        for b in scoped:
            scope = b.pipeline_id or "tenant"
            used = sum(spent.values(), Decimal(0)) if b.pipeline_id is None else spent.get(b.pipeline_id, Decimal(0))
            limit = cost.usd(b.monthly_usd)
            for alert_type, share, severity in BUDGET_LEVELS:
                key = f"{alert_type}:{scope}:{month}"
                if used >= limit * share:
                    current.add((tenant_id, key))
                    whose = "the tenant's" if b.pipeline_id is None else f"pipeline {b.pipeline_id}'s"
                    alert = raise_alert(
                        session,
                        tenant_id=tenant_id,
                        alert_type=alert_type,
                        condition_key=key,
                        severity=severity,
                        message=f"{used} of {limit} USD of {whose} {month} budget spent ({int(share * 100)} %)",
                        pipeline_id=b.pipeline_id,
                        details={"monthlyUsd": float(limit), "spentUsd": float(used), "month": month},
                    )
                    raised += alert is not None
    for alert in session.scalars(
        select(Alert).where(Alert.type.in_([BUDGET_80, BUDGET_100]), Alert.status != RESOLVED)
    ).all():
        if (alert.tenant_id, alert.condition_key) not in current:
            resolve(session, alert.tenant_id, alert.condition_key, "the budget is no longer reached")
    return raised


def conditions_step(sessions: sessionmaker[Session], rates: RateCard) -> None:
    with session_scope(sessions) as s:
        sla_step(s)
    with session_scope(sessions) as s:
        budget_step(s, rates)


# -- webhooks ---------------------------------------------------------------------------------------------
def check_url(url: str, policy: NetworkPolicy) -> None:
    """400 naming `url` when the network policy refuses its host whatever DNS says (a literal private address,
    localhost, a metadata name); names are checked again at each delivery, on the address connected to."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ValidationFailed(f"url: {exc}", details=[{"path": "url", "message": str(exc)}]) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed(
            "url: must be an http or https URL with a host",
            details=[{"path": "url", "message": "must be http(s)://host/..."}],
        )
    reason = policy.refusal_without_dns(parts.hostname, port)
    if reason is not None:
        denied = NetworkDenied(parts.hostname, port, reason)
        raise ValidationFailed(str(denied), details=[{"path": "url", "message": denied.hint}])


def _audit_view(hook: AlertWebhook) -> dict[str, Any]:
    """What the audit log keeps of a webhook: never the secret."""
    return {"name": hook.name, "url": hook.url, "severities": hook.severities, "enabled": hook.enabled}


def create_webhook(
    session: Session, principal: Principal, body: WebhookIn, vault: Vault, policy: NetworkPolicy
) -> AlertWebhook:
    check_url(body.url, policy)
    hook = AlertWebhook(
        id=_new_id("whk"),
        tenant_id=principal.tenant_id,
        name=body.name,
        url=body.url,
        secret_encrypted=delivery.seal_secret(vault, body.secret),
        severities=list(body.severities) if body.severities is not None else None,
        enabled=body.enabled,
        created_by=principal.subject,
    )
    session.add(hook)
    session.flush()
    record(session, principal, "create", "webhook", hook.id, after=_audit_view(hook))
    return hook


def update_webhook(
    session: Session, principal: Principal, webhook_id: str, body: WebhookPatch, vault: Vault, policy: NetworkPolicy
) -> AlertWebhook:
    hook = repository.get_webhook(session, principal.tenant_id, webhook_id)
    before = _audit_view(hook)
    given = body.model_fields_set
    for name in ("name", "enabled"):
        if name in given and getattr(body, name) is None:
            raise ValidationFailed(f"{name}: may not be null", details=[{"path": name, "message": "may not be null"}])
    if body.url is not None:
        check_url(body.url, policy)
        hook.url = body.url
    if body.name is not None:
        hook.name = body.name
    if body.enabled is not None:
        hook.enabled = body.enabled
    if "severities" in given:
        hook.severities = list(body.severities) if body.severities is not None else None
    if body.secret is not None:
        hook.secret_encrypted = delivery.seal_secret(vault, body.secret)
    hook.updated_at = utcnow()
    session.flush()
    details = {"secretRotated": True} if body.secret is not None else None
    record(session, principal, "update", "webhook", hook.id, before=before, after=_audit_view(hook), details=details)
    return hook


def delete_webhook(session: Session, principal: Principal, webhook_id: str) -> None:
    hook = repository.get_webhook(session, principal.tenant_id, webhook_id)
    before = _audit_view(hook)
    session.delete(hook)
    session.flush()
    record(session, principal, "delete", "webhook", webhook_id, before=before)
