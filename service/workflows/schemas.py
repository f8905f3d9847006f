"""The Workflow Management API's shapes: a workflow is an execution seen through its approval gates."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field, StrictBool

from connections.types import PlainStr
from service.schemas import ApiModel, Prose

# A gate as the status shows it: not yet reached, waiting for answers, or decided (how), or never reached
# because the run ended before it.
GateState = Literal["NOT_REACHED", "WAITING", "APPROVED", "REJECTED", "EXPIRED", "SKIPPED"]


class ApprovalData(ApiModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    approved: StrictBool
    approved_by: PlainStr | None = Field(
        default=None, max_length=200, description="display only: the approver is the token's subject"
    )
    reason: Prose | None = Field(default=None, max_length=2000)
    gate: PlainStr | None = Field(default=None, max_length=100, description="needed only when several gates wait")


class SignalIn(ApiModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    signal_name: Literal["approval"] = Field(description="the only signal: an approver's answer to the waiting gate")
    data: ApprovalData


class AnswerOut(ApiModel):
    approver: str = Field(description="who answered: the token's subject")
    approved: bool
    reason: str | None
    at: datetime
    approved_by: str | None = Field(description="the approvedBy the approver gave, when it differs (display only)")


class GateOut(ApiModel):
    name: str
    before: list[str] = Field(description="the sinks or transformations it holds back")
    state: GateState
    approver_roles: list[str] = Field(description="roles that may answer")
    quorum: int
    approvals: int = Field(description="approvals so far")
    answers: list[AnswerOut]
    deadline: datetime | None = Field(description="when it decides by itself (onExpiry), once it waits")
    on_expiry: str
    decided_at: datetime | None
    reason: str | None
    airflow_answered: bool = Field(description="Airflow's task has the decision (the service retries until so)")


class WorkflowOut(ApiModel):
    workflow_id: str = Field(description="the execution id")
    pipeline_id: str
    status: str = Field(description="the execution's status")
    waiting_for: str | None
    error_message: str | None
    gates: list[GateOut]
