"""Approval gates of executions: the workflow status, approvers' answers (roles, one per person, quorum, a
rejection decides at once) and handing the decision to Airflow's human-in-the-loop task.

The decision is stored first (the gate's row, in the request's transaction); Airflow gets it right away when
its task is ready, else the `approvals` worker retries (`airflow_answered` is the outbox flag). Airflow fails
an answer that lands within about a second of the task starting to wait, so a task younger than
ANSWER_AFTER_SECONDS is answered by the worker instead."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from dag_factory.spec.models import GATE_APPROVE as APPROVE
from dag_factory.spec.models import GATE_REJECT as REJECT
from dag_factory.spec.models import ApprovalGate as GateSpec
from dag_factory.spec.models import PipelineDefinition
from dag_factory.spec.task_ids import approval_gate, approval_task
from service.airflow.client import AirflowClient, AirflowConflict, AirflowNotFound
from service.audit.service import record
from service.auth import Principal
from service.db import utcnow
from service.errors import Conflict, Forbidden, ServiceError, ValidationFailed
from service.executions.models import TERMINAL, Execution
from service.executions.sync import WAITING_TASK_STATES, waiting_for
from service.pipelines.models import PipelineVersion
from service.workflows import repository
from service.workflows.models import APPROVED, EXPIRED, PENDING, REJECTED, ApprovalAnswer, ApprovalGate
from service.workflows.schemas import AnswerOut, ApprovalData, GateOut, GateState, WorkflowOut

log = logging.getLogger(__name__)

ANSWER_AFTER_SECONDS = 2.0


def gate_specs(session: Session, ex: Execution) -> list[GateSpec]:
    """The gates of the definition the execution runs (its pipeline revision)."""
    definition = session.scalar(
        select(PipelineVersion.definition).where(
            PipelineVersion.pipeline_id == ex.pipeline_id, PipelineVersion.revision == ex.pipeline_revision
        )
    )
    if not definition:
        return []
    return PipelineDefinition.model_validate(definition).approvals


def _tasks(ex: Execution) -> dict[str, dict[str, Any]]:
    return {str(t.get("task_id")): t for t in (ex.progress or {}).get("tasks", [])}


def _gate_state(spec: GateSpec, row: ApprovalGate | None, task: dict[str, Any] | None, ex: Execution) -> GateState:
    if row is not None and row.status in (APPROVED, REJECTED, EXPIRED):
        return cast(GateState, row.status)
    state = (task or {}).get("state")
    if state in WAITING_TASK_STATES:
        return "WAITING"
    if state == "success":  # decided by Airflow without our answer: expired with onExpiry approve
        return "EXPIRED" if spec.expires_after_seconds else "APPROVED"
    if state == "failed":
        return "EXPIRED" if spec.expires_after_seconds else "REJECTED"
    return "SKIPPED" if ex.status in TERMINAL else "NOT_REACHED"


def _deadline(spec: GateSpec, task: dict[str, Any] | None) -> datetime | None:
    started = (task or {}).get("started_at")
    if not spec.expires_after_seconds or not started:
        return None
    return datetime.fromisoformat(str(started).replace("Z", "+00:00")) + timedelta(seconds=spec.expires_after_seconds)


def status(session: Session, ex: Execution) -> WorkflowOut:
    rows = repository.gates(session, ex.id)
    answers: dict[str, list[ApprovalAnswer]] = {}
    for a in repository.answers(session, ex.id):
        answers.setdefault(a.gate, []).append(a)
    tasks = _tasks(ex)
    gates = []
    for spec in gate_specs(session, ex):
        row, task, given = rows.get(spec.name), tasks.get(approval_task(spec.name)), answers.get(spec.name, [])
        gates.append(
            GateOut(
                name=spec.name,
                before=spec.before,
                state=_gate_state(spec, row, task, ex),
                approver_roles=list(spec.approver_roles),
                quorum=spec.quorum,
                approvals=sum(1 for a in given if a.approved),
                answers=[
                    AnswerOut(
                        approver=a.approver,
                        approved=a.approved,
                        reason=a.reason,
                        at=a.answered_at,
                        approved_by=a.approved_by_note,
                    )
                    for a in given
                ],
                deadline=_deadline(spec, task),
                on_expiry=spec.on_expiry,
                decided_at=row.decided_at if row else None,
                reason=row.reason if row else None,
                airflow_answered=bool(row and row.airflow_answered),
            )
        )
    return WorkflowOut(
        workflow_id=ex.id,
        pipeline_id=ex.pipeline_id,
        status=ex.status,
        waiting_for=waiting_for(ex),
        error_message=ex.error_message,
        gates=gates,
    )


def _waiting_gate(session: Session, ex: Execution, data: ApprovalData) -> GateSpec:
    """The gate the answer is for: the one waiting (or the named one among several waiting)."""
    if ex.status in TERMINAL:
        raise Conflict(f"workflow '{ex.id}' is {ex.status}: no approval gate is waiting")
    tasks = _tasks(ex)
    specs = {s.name: s for s in gate_specs(session, ex)}
    waiting = [
        n
        for t in tasks.values()
        if (n := approval_gate(str(t.get("task_id")))) in specs and t.get("state") in WAITING_TASK_STATES
    ]
    if data.gate is not None:
        if data.gate not in specs:
            known = ", ".join(sorted(specs)) or "none"
            raise ValidationFailed(
                f"unknown approval gate '{data.gate}'", details=[{"path": "data.gate", "message": f"known: {known}"}]
            )
        if data.gate not in waiting:
            raise Conflict(f"approval gate '{data.gate}' is not waiting")
        return specs[data.gate]
    if not waiting:
        raise Conflict(f"no approval gate of workflow '{ex.id}' is waiting")
    if len(waiting) > 1:
        message = f"several gates wait ({', '.join(sorted(waiting))}): name one"
        raise ValidationFailed(message, details=[{"path": "data.gate", "message": message}])
    return specs[waiting[0]]


def signal(session: Session, ex: Execution, principal: Principal, data: ApprovalData, airflow: AirflowClient) -> None:
    """Record the principal's answer to the waiting gate; decide the gate when a rejection or the quorum says so,
    and hand the decision to Airflow (or to the worker when Airflow is not ready)."""
    spec = _waiting_gate(session, ex, data)
    if not principal.roles & set(spec.approver_roles):
        raise Forbidden(f"approval gate '{spec.name}' is answered by role {' or '.join(spec.approver_roles)}")
    row = repository.gate_for_update(session, ex.id, spec.name, principal.tenant_id)
    if row.status != PENDING:
        raise Conflict(f"approval gate '{spec.name}' is already decided: {row.status}")
    given = [a for a in repository.answers(session, ex.id) if a.gate == spec.name]
    if any(a.approver == principal.subject for a in given):
        raise Conflict(f"'{principal.subject}' has already answered approval gate '{spec.name}'")
    note = data.approved_by if data.approved_by and data.approved_by != principal.subject else None
    answer = ApprovalAnswer(
        id=uuid.uuid4().hex,
        execution_id=ex.id,
        gate=spec.name,
        tenant_id=principal.tenant_id,
        approver=principal.subject,
        approved=data.approved,
        approved_by_note=note,
        reason=data.reason,
        answered_at=utcnow(),
    )
    session.add(answer)
    given.append(answer)
    approvals = [a for a in given if a.approved]
    if not data.approved:
        row.status, row.reason = REJECTED, data.reason or "no reason given"
    elif len(approvals) >= spec.quorum:
        row.status, row.reason = APPROVED, data.reason
    if row.status != PENDING:
        row.decided_at = utcnow()
    details = {
        "gate": spec.name,
        "approved": data.approved,
        "reason": data.reason,
        "approvedBy": note,
        "decision": row.status,
        "approvals": len(approvals),
        "quorum": spec.quorum,
    }
    record(session, principal, "approval", "execution", ex.id, details=details)
    session.flush()
    if row.status != PENDING:
        deliver(row, ex, airflow, approvers=[a.approver for a in given])


def deliver(row: ApprovalGate, ex: Execution, airflow: AirflowClient, approvers: list[str] | None = None) -> bool:
    """Answer the gate's Airflow task with the decision; False (the worker tries again) when it is not ready or
    Airflow is unreachable. A task that has an answer already (it expired meanwhile) counts as answered."""
    task_id = approval_task(row.gate)
    if ex.status in TERMINAL:
        row.airflow_answered, row.airflow_error = True, f"not sent: the execution is {ex.status}"
        return True
    try:
        ti = airflow.task_instance(ex.dag_id, ex.id, task_id)
        started = ti.start_date
        if ti.state not in WAITING_TASK_STATES or started is None:
            row.airflow_error = f"the task is {ti.state or 'not started'}, not waiting"
            return False
        if (utcnow() - started).total_seconds() < ANSWER_AFTER_SECONDS:
            row.airflow_error = "the task started waiting just now"
            return False
        params = {"reason": row.reason or "", "approvers": ", ".join(approvers or [])}
        option = APPROVE if row.status == APPROVED else REJECT
        airflow.answer_hitl(ex.dag_id, ex.id, task_id, [option], params)
    except AirflowConflict:
        row.airflow_answered, row.airflow_error = True, "Airflow's task had an answer already (expired?)"
        return True
    except AirflowNotFound:
        row.airflow_error = "the task has not asked yet"
        return False
    except ServiceError as exc:
        row.airflow_error = exc.message[:500]
        return False
    row.airflow_answered, row.airflow_error = True, None
    return True


def deliver_pending(session: Session, airflow: AirflowClient) -> int:
    """The outbox: hand decided gates to Airflow. Returns how many were delivered."""
    delivered = 0
    for row in repository.undelivered(session):
        ex = session.get(Execution, row.execution_id)
        if ex is None:
            continue
        approvers = [a.approver for a in repository.answers(session, ex.id) if a.gate == row.gate]
        delivered += deliver(row, ex, airflow, approvers)
    return delivered
