"""POST /api/v1/lineage (the OpenLineage receiver) on SQLite and PostgreSQL: the API key, validation naming the
field, matching to pipeline, tenant and execution, idempotency (also under concurrency), rows and bytes into
the execution's metrics, and the forwarding outbox (its HTTP stubbed at the transport)."""

from __future__ import annotations

import copy
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from service.db import session_scope, utcnow
from service.lineage.forwarding import Forwarder, backoff
from service.lineage.models import LineageDataset, LineageEvent
from tests.service.helpers import Api, Service, expect_error

URL = "/api/v1/lineage"
PRODUCER = "https://github.com/apache/airflow/tree/providers-openlineage/2.20.3"


def dag_event(dag_id: str, run_id: str, event_type: str = "START", ol_run: str | None = None) -> dict[str, Any]:
    """A DAG-level event shaped like the ones Airflow 3.3's provider sends (tests/e2e captured them)."""
    return {
        "eventTime": "2026-12-05T07:13:44.220232+00:00",
        "eventType": event_type,
        "producer": PRODUCER,
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "job": {"namespace": "pipeline-service", "name": dag_id, "facets": {}},
        "run": {
            "runId": ol_run or str(uuid.uuid4()),
            "facets": {
                "airflowDagRun": {
                    "_producer": PRODUCER,
                    "dag": {"dag_id": dag_id, "owner": "tester"},
                    "dagRun": {"dag_id": dag_id, "run_id": run_id, "clear_number": 0, "run_type": "manual"},
                }
            },
        },
        "inputs": [],
        "outputs": [],
    }


def task_event(
    dag_id: str,
    run_id: str,
    task_id: str,
    event_type: str = "COMPLETE",
    outputs: list[tuple[str, int | None, int | None]] = (),  # type: ignore[assignment]
    inputs: tuple[str, ...] = (),
    parent: str | None = None,
    clear_number: int | None = 0,
) -> dict[str, Any]:
    parent = parent or str(uuid.uuid4())
    return {
        "eventTime": "2026-12-05T07:13:49.714082+00:00",
        "eventType": event_type,
        "producer": PRODUCER,
        "job": {"namespace": "pipeline-service", "name": f"{dag_id}.{task_id}", "facets": {}},
        "run": {
            "runId": str(uuid.uuid4()),
            "facets": {
                "airflow": {
                    "dag": {"dag_id": dag_id},
                    "dagRun": {"dag_id": dag_id, "run_id": run_id, "clear_number": clear_number},
                    "task": {"task_id": task_id, "operator_class": "StageTableOperator"},
                    "taskInstance": {"try_number": 1},
                },
                "parent": {
                    "job": {"name": dag_id, "namespace": "pipeline-service"},
                    "run": {"runId": parent},
                },
            },
        },
        "inputs": [{"namespace": "postgres://127.0.0.1:5432", "name": name, "facets": {}} for name in inputs],
        "outputs": [
            {
                "namespace": "postgres://127.0.0.1:5432",
                "name": name,
                "facets": {},
                "outputFacets": {"outputStatistics": {"_producer": PRODUCER, "rowCount": rows, "size": size}},
            }
            for name, rows, size in outputs
        ],
    }


def post(svc: Service, event: Any, key: str | None = "default", **kwargs: Any) -> httpx.Response:
    token = svc.app.state.openlineage_api_key if key == "default" else key
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if isinstance(event, (dict, list)):
        return svc.client.post(URL, json=event, headers=headers, **kwargs)
    return svc.client.post(URL, content=event, headers={**headers, "Content-Type": "application/json"}, **kwargs)


def stored(svc: Service) -> list[LineageEvent]:
    with svc.app.state.sessions() as s:
        return list(s.scalars(select(LineageEvent).order_by(LineageEvent.id)))


def datasets(svc: Service) -> list[LineageDataset]:
    with svc.app.state.sessions() as s:
        return list(s.scalars(select(LineageDataset).order_by(LineageDataset.id)))


@pytest.fixture(autouse=True)
def uncached(svc: Service) -> None:
    """Status reads see the row as it is now (not the body cached by a read a moment before)."""
    svc.settings.status_max_age_seconds = 0
    svc.settings.status_cache_seconds = 0


@pytest.fixture
def run(acme: Api, active: dict[str, Any]) -> dict[str, Any]:
    """An execution of acme's active example pipeline: its dag id and execution (Airflow run) id."""
    return acme.execute(active["pipelineId"])


# -- the API key -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", [None, "wrong-key", ""])
def test_a_missing_or_wrong_key_is_401_and_stores_nothing(svc: Service, run: dict[str, Any], key: str | None) -> None:
    resp = post(svc, dag_event(run["dagId"], run["executionId"]), key=key)
    error = expect_error(resp, 401, "unauthorized")
    assert "key" in error["message"] and resp.headers["WWW-Authenticate"] == "Bearer"
    assert stored(svc) == []


def test_the_key_is_generated_once_into_the_data_dir(svc: Service) -> None:
    key = svc.app.state.openlineage_api_key
    assert len(key) >= 32 and (svc.settings.data_dir / "openlineage_api_key").read_text() == key
    assert svc.settings.resolved_openlineage_api_key() == key  # what `up` and the harness hand to Airflow


def test_a_user_token_is_not_the_key(svc: Service, run: dict[str, Any]) -> None:
    resp = post(svc, dag_event(run["dagId"], run["executionId"]), key=svc.token("acme"))
    expect_error(resp, 401, "unauthorized")


# -- validation ------------------------------------------------------------------------------------------------
def _broken(change: Any) -> Any:
    def make(dag_id: str, run_id: str) -> Any:
        event = task_event(dag_id, run_id, "sources.raw_transactions", outputs=[("w.s.t", 3, 10)])
        change(event)
        return event

    return make


CASES = {
    "not json": (lambda d, r: b"{not json", "body"),
    "an array": (lambda d, r: [1, 2], "body"),
    "no eventTime": (_broken(lambda e: e.pop("eventTime")), "eventTime"),
    "eventTime no date": (_broken(lambda e: e.update(eventTime="yesterday")), "eventTime"),
    "eventTime no zone": (_broken(lambda e: e.update(eventTime="2026-12-05T07:13:49")), "eventTime"),
    "eventType unknown": (_broken(lambda e: e.update(eventType="DONE")), "eventType"),
    "no run": (_broken(lambda e: e.pop("run")), "run"),
    "runId not a uuid": (_broken(lambda e: e["run"].update(runId="exec-1")), "run.runId"),
    "run facets not an object": (_broken(lambda e: e["run"].update(facets=[])), "run.facets"),
    "no job name": (_broken(lambda e: e["job"].pop("name")), "job.name"),
    "job namespace a number": (_broken(lambda e: e["job"].update(namespace=7)), "job.namespace"),
    "outputs not a list": (_broken(lambda e: e.update(outputs={})), "outputs"),
    "output without name": (_broken(lambda e: e["outputs"][0].pop("name")), "outputs[0].name"),
    "rowCount a string": (
        _broken(lambda e: e["outputs"][0]["outputFacets"]["outputStatistics"].update(rowCount="3")),
        "outputs[0].outputFacets.outputStatistics.rowCount",
    ),
    "size negative": (
        _broken(lambda e: e["outputs"][0]["outputFacets"]["outputStatistics"].update(size=-1)),
        "outputs[0].outputFacets.outputStatistics.size",
    ),
    "job name too long": (_broken(lambda e: e["job"].update(name="x" * 501)), "job.name"),
    "dataset name too long": (_broken(lambda e: e["outputs"][0].update(name="t" * 501)), "outputs[0].name"),
    "run id not a string": (
        _broken(lambda e: e["run"]["facets"]["airflow"]["dagRun"].update(run_id=5)),
        "run.facets.airflow.dagRun.run_id",
    ),
    "run id too long": (
        _broken(lambda e: e["run"]["facets"]["airflow"]["dagRun"].update(run_id="r" * 251)),
        "run.facets.airflow.dagRun.run_id",
    ),
    "a dataset event": (
        lambda d, r: {"eventTime": "2026-01-01T00:00:00Z", "dataset": {"namespace": "n", "name": "x"}},
        "run",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_malformed_event_is_400_naming_the_field_and_stores_nothing(
    svc: Service, run: dict[str, Any], case: str
) -> None:
    make, path = CASES[case]
    error = expect_error(post(svc, make(run["dagId"], run["executionId"])), 400, "validation_error", path)
    assert path in error["message"]
    assert stored(svc) == [] and datasets(svc) == []
    assert svc.client.get("/health").status_code == 200  # the service carries on


def test_an_oversized_body_is_413(svc: Service, run: dict[str, Any]) -> None:
    event = dag_event(run["dagId"], run["executionId"])
    event["job"]["facets"]["documentation"] = {"description": "x" * (6 * 1024 * 1024)}
    expect_error(post(svc, event), 413, "payload_too_large")
    assert stored(svc) == []


# -- matching and storing --------------------------------------------------------------------------------------
def test_dag_and_task_events_are_stored_under_the_execution_and_tenant(
    svc: Service, run: dict[str, Any], active: dict[str, Any]
) -> None:
    dag_id, run_id = run["dagId"], run["executionId"]
    start = dag_event(dag_id, run_id)
    task = task_event(
        dag_id,
        run_id,
        "sources.raw_transactions",
        outputs=[("warehouse.stg_1.raw_transactions", 159, 24576)],
        inputs=("sales.public.raw_transactions",),
    )
    assert post(svc, start).json() == {"status": "stored"}
    assert post(svc, task).json() == {"status": "stored"}
    dag_row, task_row = stored(svc)
    assert (dag_row.tenant_id, dag_row.pipeline_id, dag_row.execution_id) == ("acme", active["pipelineId"], run_id)
    assert (dag_row.task_id, dag_row.event_type, dag_row.job_name) == (None, "START", dag_id)
    assert (task_row.task_id, task_row.event_type, task_row.ol_run_id) == (
        "sources.raw_transactions",
        "COMPLETE",
        task["run"]["runId"],
    )
    assert json.loads(task_row.payload) == task  # the body as received (it is forwarded unchanged)
    assert not task_row.forward_pending  # no forward URL configured
    got = [(d.direction, d.name, d.rows, d.bytes, d.task_id, d.tenant_id) for d in datasets(svc)]
    assert got == [
        ("input", "sales.public.raw_transactions", None, None, "sources.raw_transactions", "acme"),
        ("output", "warehouse.stg_1.raw_transactions", 159, 24576, "sources.raw_transactions", "acme"),
    ]


def test_the_same_event_twice_is_stored_once(svc: Service, acme: Api, run: dict[str, Any]) -> None:
    event = task_event(run["dagId"], run["executionId"], "sources.products", outputs=[("w.s.products", 8, 100)])
    assert post(svc, event).json() == {"status": "stored"}
    assert post(svc, event).json() == {"status": "duplicate"}
    assert post(svc, json.dumps(event, indent=2).encode()).json() == {"status": "duplicate"}  # same event, new bytes
    assert len(stored(svc)) == 1 and len(datasets(svc)) == 1
    assert acme.execution(run["executionId"])["metrics"]["rowsProcessed"] == 8  # counted once


def test_concurrent_duplicates_are_stored_once_without_errors(svc: Service, acme: Api, run: dict[str, Any]) -> None:
    event = task_event(run["dagId"], run["executionId"], "sinks.daily_transactions", outputs=[("w.a.t", 5, 50)])
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post(svc, event), range(16)))
    assert {r.status_code for r in answers} == {200}, [r.text for r in answers if r.status_code != 200]
    assert sorted(r.json()["status"] for r in answers) == ["duplicate"] * 15 + ["stored"]
    assert len(stored(svc)) == 1
    assert acme.execution(run["executionId"])["metrics"]["rowsWritten"] == 5


def test_events_of_no_pipeline_of_ours_are_acknowledged_and_dropped(svc: Service, run: dict[str, Any]) -> None:
    for event in (
        dag_event("acme.no-such-pipeline", run["executionId"]),
        dag_event("pipeline_service_sentinel", "manual__1"),  # a DAG id without a tenant
        task_event("other.daily-sales-etl", run["executionId"], "sources.products"),
    ):
        resp = post(svc, event)
        assert (resp.status_code, resp.json()) == (200, {"status": "ignored"}), resp.text
    assert stored(svc) == []


def test_a_task_event_is_matched_through_its_parent_run(svc: Service, run: dict[str, Any]) -> None:
    dag_id, run_id = run["dagId"], run["executionId"]
    dag_run = str(uuid.uuid4())
    orphan = task_event(dag_id, "ignored", "prepare_staging", parent=dag_run)
    del orphan["run"]["facets"]["airflow"]  # no Airflow facet: the parent run facet is all there is
    assert post(svc, orphan).json() == {"status": "ignored"}  # its DAG run is not known yet
    post(svc, dag_event(dag_id, run_id, ol_run=dag_run))
    assert post(svc, orphan).json() == {"status": "stored"}
    task_row = stored(svc)[-1]
    assert (task_row.execution_id, task_row.task_id) == (run_id, "prepare_staging")


def test_an_event_is_stored_under_the_tenant_whose_dag_it_is(svc: Service, acme: Api, run: dict[str, Any]) -> None:
    other = svc.api("globex")
    other.create_connection("sales-database")
    other.create_connection("warehouse")
    from tests.service.helpers import example

    theirs = other.create_pipeline(example())  # the same pipeline name in another tenant
    svc.publish()
    their_run = other.execute(theirs["pipelineId"])
    mine = task_event(run["dagId"], run["executionId"], "sources.products", outputs=[("w.s.p", 8, 1)])
    post(svc, mine)
    (row,) = stored(svc)
    assert (row.tenant_id, row.pipeline_id) == ("acme", run["pipelineId"])
    # An event naming acme's DAG but globex's run id: stored under acme (the DAG decides), and globex's
    # execution is untouched.
    post(svc, task_event(run["dagId"], their_run["executionId"], "sinks.daily_transactions", outputs=[("x", 9, 9)]))
    assert stored(svc)[-1].tenant_id == "acme"
    assert other.execution(their_run["executionId"])["metrics"]["rowsWritten"] is None
    assert acme.get(f"/v1/pipelines/executions/{their_run['executionId']}").status_code == 404


# -- rows and bytes --------------------------------------------------------------------------------------------
def test_metrics_are_summed_from_the_sources_and_sinks_events(svc: Service, acme: Api, run: dict[str, Any]) -> None:
    dag_id, ex_id = run["dagId"], run["executionId"]
    metrics = acme.execution(ex_id)["metrics"]
    assert (metrics["rowsProcessed"], metrics["rowsWritten"], metrics["bytesProcessed"]) == (None, None, None)
    post(svc, task_event(dag_id, ex_id, "sources.raw_transactions", "START"))
    post(svc, task_event(dag_id, ex_id, "sources.raw_transactions", outputs=[("w.stg.raw", 120, 16384)]))
    running = acme.execution(ex_id)["metrics"]
    assert (running["rowsProcessed"], running["rowsWritten"], running["bytesProcessed"]) == (120, None, 16384)
    post(svc, task_event(dag_id, ex_id, "sources.products", outputs=[("w.stg.products", 8, None)]))
    post(svc, task_event(dag_id, ex_id, "transformations.clean", outputs=[("w.stg.clean", 999, 1)]))  # not counted
    post(svc, task_event(dag_id, ex_id, "sinks.daily_transactions", outputs=[("w.analytics.dt", 100, 8192)]))
    done = acme.execution(ex_id)["metrics"]
    assert (done["rowsProcessed"], done["rowsWritten"], done["bytesProcessed"]) == (128, 100, 16384)
    # The task cleared and re-run in Airflow (the run's clear_number counts up) completes again: its new
    # counts replace its old ones; so also for an event that does not say whether its run was cleared.
    rerun = task_event(dag_id, ex_id, "sources.raw_transactions", outputs=[("w.stg.raw", 130, 20000)], clear_number=1)
    post(svc, rerun)
    again = acme.execution(ex_id)["metrics"]
    assert (again["rowsProcessed"], again["bytesProcessed"]) == (138, 20000)
    # A partitioned source: its parts stage the rows, the union of the parts (a view over them) re-reads
    # them: counted once, by the parts.
    for i, rows in enumerate((60, 40)):
        part = task_event(dag_id, ex_id, f"sources.orders.part_{i}", outputs=[(f"w.stg.orders_part_{i}", rows, 8192)])
        post(svc, part)
    union = task_event(
        dag_id,
        ex_id,
        "sources.orders",
        outputs=[("w.stg.orders", 100, None)],
        inputs=("w.stg.orders_part_0", "w.stg.orders_part_1"),
    )
    for event in union["inputs"]:
        event["namespace"] = "postgres://127.0.0.1:5432"
    post(svc, union)
    assert acme.execution(ex_id)["metrics"]["rowsProcessed"] == 138 + 100
    assert acme.execution(ex_id)["metrics"]["bytesProcessed"] == 20000 + 2 * 8192
    third = task_event(
        dag_id, ex_id, "sources.raw_transactions", outputs=[("w.stg.raw", 131, 20001)], clear_number=None
    )
    post(svc, third)
    assert acme.execution(ex_id)["metrics"]["rowsProcessed"] == 139 + 100
    assert svc.fake.calls("GET", r".*/xcomEntries/.*") == []  # metrics cost no XCom read any more


# -- forwarding ------------------------------------------------------------------------------------------------
class Target:
    """The forward target, stubbed at the HTTP transport: answers with the queued statuses, then 200."""

    def __init__(self, *statuses: int):
        self.statuses = list(statuses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 0:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(status, text="nope" if status >= 400 else "")


def forwarding(svc: Service, target: Target) -> Forwarder:
    svc.settings.openlineage_forward_url = "http://marquez.test:5000/"
    svc.settings.openlineage_forward_api_key = "fwd-secret-Q7"
    return Forwarder(svc.app.state.sessions, svc.settings, transport=httpx.MockTransport(target))


def _due_now(svc: Service) -> None:
    with session_scope(svc.app.state.sessions) as s:
        s.execute(update(LineageEvent).values(forward_after=utcnow() - timedelta(seconds=1)))


def test_accepted_events_are_forwarded_unchanged_with_retry(svc: Service, run: dict[str, Any], caplog: Any) -> None:
    target = Target(503, 0)
    forwarder = forwarding(svc, target)
    body = json.dumps(dag_event(run["dagId"], run["executionId"]), indent=1).encode()  # its own formatting
    post(svc, body)
    post(svc, task_event(run["dagId"], run["executionId"], "prepare_staging"))
    assert all(e.forward_pending for e in stored(svc))

    assert forwarder.step() == 0  # 503: both wait, oldest first (the second is not tried past a failure)
    first, second = stored(svc)
    assert (first.forward_attempts, second.forward_attempts) == (1, 0) and first.forward_error.startswith("HTTP 503")
    assert first.forward_after is not None and first.forward_after > utcnow() + backoff(1) - timedelta(seconds=5)
    assert forwarder.step() == 0  # the first is backing off; the second is tried: connection refused
    assert stored(svc)[1].forward_attempts == 1 and stored(svc)[1].forward_error.startswith("ConnectError")
    requests = len(target.requests)
    assert forwarder.step() == 0 and len(target.requests) == requests  # both back off: nothing is due now
    _due_now(svc)
    restarted = Forwarder(svc.app.state.sessions, svc.settings, transport=httpx.MockTransport(target))
    assert restarted.step() == 2  # after a restart: nothing lost, everything delivered
    assert not any(e.forward_pending for e in stored(svc))

    delivered = target.requests[-2:]
    assert [r.content for r in delivered] == [body, stored(svc)[1].payload.encode()]  # byte for byte
    assert {str(r.url) for r in delivered} == {"http://marquez.test:5000/api/v1/lineage"}
    assert {r.headers["authorization"] for r in delivered} == {"Bearer fwd-secret-Q7"}
    assert {r.headers["content-type"] for r in delivered} == {"application/json"}
    assert "fwd-secret-Q7" not in caplog.text and all(
        "fwd-secret-Q7" not in (e.forward_error or "") for e in stored(svc)
    )


def test_an_event_the_target_rejects_is_not_retried(svc: Service, run: dict[str, Any]) -> None:
    forwarder = forwarding(svc, Target(400))
    post(svc, dag_event(run["dagId"], run["executionId"]))
    post(svc, dag_event(run["dagId"], run["executionId"], "COMPLETE"))
    assert forwarder.step() == 2  # the rejected one is done with; the next goes on
    rejected, delivered = stored(svc)
    assert not rejected.forward_pending and rejected.forward_error.startswith("rejected: HTTP 400")
    assert not delivered.forward_pending and delivered.forward_error is None


def test_nothing_is_forwarded_without_a_forward_url(svc: Service, run: dict[str, Any]) -> None:
    target = Target()
    forwarder = Forwarder(svc.app.state.sessions, svc.settings, transport=httpx.MockTransport(target))
    post(svc, dag_event(run["dagId"], run["executionId"]))
    assert forwarder.step() == 0 and target.requests == []
    with svc.app.state.sessions() as s:
        assert s.scalar(select(func.count()).select_from(LineageEvent).where(LineageEvent.forward_pending)) == 0


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(n).total_seconds() for n in (1, 2, 3, 8, 9, 50)] == [2, 4, 8, 256, 300, 300]


def test_a_gzip_body_is_accepted(svc: Service, run: dict[str, Any]) -> None:
    import gzip

    event = dag_event(run["dagId"], run["executionId"])
    raw = json.dumps(event).encode()
    headers = {"Authorization": f"Bearer {svc.app.state.openlineage_api_key}", "Content-Encoding": "gzip"}
    resp = svc.client.post(URL, content=gzip.compress(raw), headers={**headers, "Content-Type": "application/json"})
    assert resp.json() == {"status": "stored"}, resp.text
    assert stored(svc)[0].payload == raw.decode()
    expect_error(svc.client.post(URL, content=b"not gzip", headers=headers), 400, "validation_error", "body")
    assert copy.deepcopy(event) == json.loads(stored(svc)[0].payload)
    truncated = gzip.compress(raw)[:-12]
    expect_error(svc.client.post(URL, content=truncated, headers=headers), 400, "validation_error", "body")
    # 6 MB of zeros compress to a few KB: refused once past the limit, never inflated whole.
    bomb = gzip.compress(b"0" * 6_000_000)
    assert len(bomb) < 20_000
    assert svc.client.post(URL, content=bomb, headers=headers).status_code == 413


def test_the_stack_switches_openlineage_on_with_the_key(tmp_path: Any) -> None:
    from service.stack import AirflowStack

    key = "ol-key-" + uuid.uuid4().hex
    env = AirflowStack(
        tmp_path / "af", 8080, tmp_path / "dags", lineage_url="http://127.0.0.1:9000/", lineage_api_key=key
    ).env()
    assert "AIRFLOW__OPENLINEAGE__DISABLED" not in env
    transport = json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    assert transport["type"] == "http" and transport["url"] == "http://127.0.0.1:9000"
    assert transport["endpoint"] == "api/v1/lineage" and transport["auth"] == {"type": "api_key", "apiKey": key}
    assert env["AIRFLOW__OPENLINEAGE__EXECUTION_TIMEOUT"] == "5"  # a task waits at most that on emission
    off = AirflowStack(tmp_path / "af", 8080, tmp_path / "dags").env()
    assert off["AIRFLOW__OPENLINEAGE__DISABLED"] == "True" and "AIRFLOW__OPENLINEAGE__TRANSPORT" not in off
