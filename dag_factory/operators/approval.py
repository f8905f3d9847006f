"""A definition's approval gate as Airflow's human-in-the-loop task (providers-standard HITLOperator).

The task asks "Approve" or "Reject" and waits (on Airflow 3.3 in the AWAITING_INPUT state). The pipeline
service collects the approvers' answers (quorum, roles) and answers the task once the gate is decided, with
the approvers and the reason in `params_input`. Unlike ApprovalOperator, whose rejection skips the downstream
tasks (the run would end successful), a rejection fails the task with its reason, so the run ends failed.
Without an answer within `response_timeout` Airflow answers with `defaults` (the gate's onExpiry); an expired
reject fails with "approval gate '<name>' expired".
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk.exceptions import AirflowFailException

from dag_factory.spec.models import GATE_APPROVE as APPROVE
from dag_factory.spec.models import GATE_REJECT as REJECT

REASON_MAX = 500


class ApprovalGateOperator(HITLOperator):
    template_fields = ()  # subject and body are built from validated names: nothing to render

    def __init__(
        self,
        *,
        gate: str,
        approver_roles: list[str],
        quorum: int,
        before: list[str],
        expires_after: timedelta | None,
        on_expiry: str,
        **kwargs: Any,
    ) -> None:
        self.gate = gate
        self.on_expiry = on_expiry
        waits = ", ".join(f"`{b}`" for b in before)
        expiry = f"; after {expires_after} without a decision: {on_expiry}" if expires_after else ""
        super().__init__(
            subject=f"Approval gate '{gate}'",
            body=(
                f"Holds back {waits} until {quorum} approver(s) with role {' or '.join(approver_roles)} approve "
                f"through the pipeline service (one rejection fails the run){expiry}."
            ),
            options=[APPROVE, REJECT],
            defaults=[APPROVE if on_expiry == "approve" else REJECT] if expires_after else None,
            multiple=False,
            response_timeout=expires_after,
            **kwargs,
        )

    def validate_params_input(self, params_input: Mapping[str, Any]) -> None:
        """The service's answer carries `reason` and `approvers` (no form fields are declared)."""

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        result = super().execute_complete(context, event)
        chosen = list(result["chosen_options"])
        if chosen == [APPROVE]:
            how = "expired and approved (onExpiry)" if event.get("timedout") else "approved"
            self.log.info("approval gate '%s' %s", self.gate, how)
            return result
        if event.get("timedout"):
            raise AirflowFailException(f"approval gate '{self.gate}' expired")
        answer = result.get("params_input") or {}
        reason = str(answer.get("reason") or "no reason given")[:REASON_MAX]
        by = str(answer.get("approvers") or "")[:REASON_MAX]
        raise AirflowFailException(f"approval gate '{self.gate}' rejected{f' by {by}' if by else ''}: {reason}")
