"""Approval gates in the definition (validation naming JSON paths) and in the DAG (a HITL task between a
target's upstream and the target; rejection and expiry outcomes of the operator)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dag_factory import build_dag
from dag_factory.exceptions import DefinitionError
from dag_factory.spec import validate_definition
from dag_factory.spec.task_ids import approval_gate, approval_task

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((REPO / "examples" / "daily-sales-etl.json").read_text())["definition"]
CONNS = {"sales-database": "acme.sales-database", "warehouse": "acme.warehouse"}
GATE = {
    "name": "steward_review",
    "before": ["daily_transactions"],
    "approverRoles": ["admin"],
    "quorum": 1,
    "expiresAfterSeconds": 3600,
    "onExpiry": "reject",
}


def gated(*gates: dict) -> dict:
    d = copy.deepcopy(EXAMPLE)
    d["approvals"] = list(gates)
    return d


def errors_of(definition: dict) -> dict[str, str]:
    with pytest.raises(DefinitionError) as exc:
        validate_definition(definition, check_sql=False)
    return {e["path"]: e["message"] for e in exc.value.errors}


def test_a_gate_is_read_with_its_defaults():
    d = validate_definition(gated({"name": "review", "before": ["enrich_with_products"]}), check_sql=False)
    (gate,) = d.approvals
    assert (gate.approver_roles, gate.quorum, gate.expires_after_seconds, gate.on_expiry) == (
        ["admin"],
        1,
        None,
        "reject",
    )


@pytest.mark.parametrize(
    ("change", "path", "fragment"),
    [
        ({"before": ["nope"]}, "approvals[0].before[0]", "unknown sink or transformation 'nope'"),
        ({"before": ["raw_transactions"]}, "approvals[0].before[0]", "unknown sink or transformation"),
        ({"quorum": 0}, "approvals[0].quorum", "greater than or equal to 1"),
        ({"approverRoles": ["owner"]}, "approvals[0].approverRoles[0]", "'admin', 'editor' or 'viewer'"),
        ({"approverRoles": []}, "approvals[0].approverRoles", "at least 1"),
        ({"onExpiry": "skip"}, "approvals[0].onExpiry", "'reject' or 'approve'"),
        ({"expiresAfterSeconds": 0}, "approvals[0].expiresAfterSeconds", "greater than or equal to 1"),
        ({"expiresAfterSeconds": 31 * 86_400}, "approvals[0].expiresAfterSeconds", "less than or equal"),
        ({"name": "Bad Name"}, "approvals[0].name", "pattern"),
        ({"colour": "red"}, "approvals[0].colour", "Extra inputs"),
    ],
)
def test_bad_gates_are_named_by_json_path(change, path, fragment):
    errors = errors_of(gated(GATE | change))
    assert path in errors, errors
    assert fragment in errors[path]


def test_duplicate_gate_names_are_refused():
    errors = errors_of(gated(GATE, GATE | {"before": ["enrich_with_products"]}))
    assert errors == {"approvals[1].name": "duplicate gate name 'steward_review'"}


def test_task_ids_of_gates_round_trip():
    assert approval_task("review") == "approvals.review"
    assert approval_gate("approvals.review") == "review"
    assert approval_gate("sinks.review") is None


@pytest.fixture(scope="module")
def dag():
    second = {"name": "second_look", "before": ["enrich_with_products"], "approverRoles": ["admin", "editor"]}
    return build_dag(gated(GATE, second), dag_id="acme.gated", connections=CONNS)


def test_the_gate_sits_between_the_target_and_what_it_waits_for(dag):
    plain = build_dag(EXAMPLE, dag_id="acme.plain", connections=CONNS)
    for gate_id, target in [
        ("approvals.steward_review", "sinks.daily_transactions"),
        ("approvals.second_look", "transformations.enrich_with_products"),
    ]:
        gate = dag.get_task(gate_id)
        assert gate_id in dag.get_task(target).upstream_task_ids
        # the gate waits for what the target waited for, so the target cannot start before the gate decides
        assert plain.get_task(target).upstream_task_ids <= gate.upstream_task_ids
        assert gate.upstream_task_ids - plain.get_task(target).upstream_task_ids <= {"approvals.second_look"}


def test_the_gate_is_a_hitl_task_with_its_expiry(dag):
    from airflow.providers.standard.operators.hitl import HITLOperator

    gate = dag.get_task("approvals.steward_review")
    assert isinstance(gate, HITLOperator)
    assert gate.options == ["Approve", "Reject"]
    assert gate.defaults == ["Reject"]
    assert gate.response_timeout == timedelta(seconds=3600)
    assert gate.retries == 0
    assert "steward_review" in gate.doc_md and "daily_transactions" in gate.doc_md
    second = dag.get_task("approvals.second_look")
    assert second.defaults is None and second.response_timeout is None


def _event(option: str, *, timedout: bool = False, reason: str = "") -> dict:
    return {
        "chosen_options": [option],
        "params_input": {"reason": reason, "approvers": "alice"},
        "responded_at": datetime.now(UTC),
        "responded_by_user": None,
        "timedout": timedout,
    }


def test_a_rejection_fails_with_the_reason_and_an_approval_passes(dag):
    from airflow.sdk.exceptions import AirflowFailException

    gate = dag.get_task("approvals.steward_review")
    assert gate.execute_complete({}, _event("Approve"))["chosen_options"] == ["Approve"]
    with pytest.raises(AirflowFailException, match="approval gate 'steward_review' rejected by alice: bad numbers"):
        gate.execute_complete({}, _event("Reject", reason="bad numbers"))
    with pytest.raises(AirflowFailException, match="approval gate 'steward_review' expired"):
        gate.execute_complete({}, _event("Reject", timedout=True))


def test_the_published_schema_describes_gates():
    from dag_factory.spec.models import PipelineDefinition

    schema = PipelineDefinition.model_json_schema(by_alias=True)
    gate = schema["$defs"]["ApprovalGate"]
    assert "approvals" in schema["properties"]
    assert {"approverRoles", "quorum", "expiresAfterSeconds", "onExpiry", "before", "name"} == set(gate["properties"])
    assert gate["properties"]["quorum"]["minimum"] == 1
