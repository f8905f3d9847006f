"""Typed client for Airflow 3's REST API (/api/v2), with its failures mapped to service errors.

Authentication: Airflow's simple auth manager issues a JWT from POST /auth/token; the client fetches one
lazily and once more when Airflow answers 401 (tokens expire, Airflow restarts with a new secret).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ValidationError

from service.airflow.logs import sanitized
from service.airflow.models import (
    Dag,
    DagDetails,
    DagImportError,
    DagList,
    DagRun,
    DagRunList,
    HitlDetail,
    ImportErrorList,
    LogEvent,
    TaskInstance,
    TaskInstanceList,
    XComEntry,
)
from service.errors import AirflowUnavailable, NotFound, ServiceError, UpstreamError, ValidationFailed

M = TypeVar("M", bound=BaseModel)
PAGE = 100  # Airflow's [api] maximum_page_limit by default: a larger page_limit is cut to it


class AirflowNotFound(NotFound):
    code = "airflow_not_found"


class AirflowConflict(UpstreamError):
    status_code = 409
    code = "airflow_conflict"


class AirflowRejected(UpstreamError):
    """Airflow refused the request's content (HTTP 400/422), e.g. a trigger conf that fails the DAG's params."""

    status_code = 400
    code = "airflow_rejected"


class AirflowError(UpstreamError):
    """Airflow answered, but not what its API promises (a required field missing or of the wrong type)."""


def _seg(value: str | int) -> str:
    """One path segment, percent-encoded: an id can never add a segment, a query or a control character."""
    return quote(str(value), safe="")


# Path segments that name a thing in Airflow's REST API: the segment after one is an identifier.
_IDENTIFIED = {
    "dags": "{dag_id}",
    "dagRuns": "{dag_run_id}",
    "taskInstances": "{task_id}",
    "logs": "{try_number}",
    "xcomEntries": "{xcom_key}",
    "connections": "{connection_id}",
    "parseDagFile": "{file_token}",
}
_FIXED = frozenset({*_IDENTIFIED, "details", "clearTaskInstances", "importErrors", "hitlDetails", "~"})


def endpoint_template(path: str) -> str:
    """`/dags/{dag_id}/dagRuns/{dag_run_id}` for `/dags/sales/dagRuns/manual__1`: a metric label whose values
    are bounded by the API, never a DAG or run id (any segment not known here is `{other}`)."""
    segments = path.split("?", 1)[0].strip("/").split("/")
    out: list[str] = []
    for i, seg in enumerate(segments):
        after = _IDENTIFIED.get(segments[i - 1]) if i else None
        out.append(seg if seg == "~" else after if after else seg if seg in _FIXED else "{other}")
    return "/" + "/".join(out)


class CallMetrics:
    """The client's calls to Airflow: latency by endpoint template, method and outcome; failures counted.
    Unregistered: the app that owns the client exposes them (service/observability.py)."""

    #: outcomes that mean Airflow did not do what was asked (a 404 or 409 is an answer, not a failure)
    FAILURES = frozenset({"airflow_unavailable", "airflow_error", "airflow_rejected", "validation_error"})

    def __init__(self) -> None:
        self.latency = Histogram(
            "pipeline_airflow_call_duration_seconds",
            "Calls from the service to Airflow's REST API, by endpoint template, method and outcome",
            ["endpoint", "method", "outcome"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=None,
        )
        self.errors = Counter(
            "pipeline_airflow_call_errors",
            "Calls to Airflow that failed (unreachable, HTTP 5xx, a refused request), by endpoint and reason",
            ["endpoint", "method", "reason"],
            registry=None,
        )

    def observe(self, method: str, path: str, seconds: float, outcome: str) -> None:
        endpoint = endpoint_template(path)
        self.latency.labels(endpoint, method, outcome).observe(seconds)
        if outcome in self.FAILURES:
            self.errors.labels(endpoint, method, outcome).inc()


def _detail(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail", resp.text)
    except (ValueError, AttributeError):
        detail = resp.text
    return str(detail)[:500]


class AirflowClient:
    def __init__(
        self,
        base_url: str,
        username: str,
        password: Callable[[], str | None],
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        self._token: str | None = None
        self._lock = threading.Lock()
        self.metrics = CallMetrics()

    def close(self) -> None:
        self._http.close()

    # -- plumbing -------------------------------------------------------------------------------
    def _login(self) -> str:
        password = self._password()
        if not password:
            raise AirflowUnavailable("Airflow credentials are not available yet (is Airflow started?)")
        try:
            resp = self._http.post("/auth/token", json={"username": self._username, "password": password})
        except httpx.HTTPError as exc:
            raise AirflowUnavailable(f"Airflow is unreachable at {self.base_url}: {type(exc).__name__}") from None
        if resp.status_code not in (200, 201):
            raise UpstreamError(f"Airflow rejected the service's login (HTTP {resp.status_code})")
        return str(resp.json()["access_token"])

    def _auth_header(self, refresh: bool = False) -> dict[str, str]:
        with self._lock:
            if refresh or self._token is None:
                self._token = self._login()
            return {"Authorization": f"Bearer {self._token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Every call to /api/v2 goes through here: timed, its outcome counted (self.metrics)."""
        started, outcome = time.perf_counter(), "ok"
        try:
            return self._request(method, path, **kwargs)
        except ServiceError as exc:
            outcome = exc.code
            raise
        finally:
            self.metrics.observe(method, path, time.perf_counter() - started, outcome)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in (0, 1):
            headers = {**kwargs.pop("headers", {}), **self._auth_header(refresh=attempt == 1)}
            try:
                resp = self._http.request(method, "/api/v2" + path, headers=headers, **kwargs)
            except httpx.InvalidURL:
                raise ValidationFailed(f"not a valid Airflow path: {path!r}") from None
            except httpx.HTTPError as exc:
                raise AirflowUnavailable(f"Airflow is unreachable at {self.base_url}: {type(exc).__name__}") from None
            if resp.status_code != 401:
                break
            kwargs["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
        if resp.status_code == 404:
            raise AirflowNotFound(f"not found in Airflow: {path}")
        if resp.status_code == 409:
            raise AirflowConflict(f"conflict in Airflow: {path}")
        if resp.status_code in (400, 422):
            raise AirflowRejected(f"Airflow refused {method} {path}: {_detail(resp)}")
        if resp.status_code >= 400:
            raise UpstreamError(f"Airflow answered HTTP {resp.status_code} to {method} {path}: {resp.text[:300]}")
        return resp

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.request(method, path, **kwargs)
        return resp.json() if resp.content else None

    def _call(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        """One call whose answer is read as `model`."""
        data = self._json(method, path, **kwargs)
        try:
            return model.model_validate(data if data is not None else {})
        except ValidationError as exc:
            fields = ", ".join(sorted({".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()}))
            raise AirflowError(
                f"Airflow's answer to {method} {path} is not a {model.__name__}: missing or invalid {fields}"
            ) from None

    # -- health -----------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        try:
            resp = self._http.get("/api/v2/monitor/health", timeout=3.0)
            body = resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            raise AirflowUnavailable(f"Airflow is unreachable at {self.base_url}: {type(exc).__name__}") from None
        if not isinstance(body, dict):
            raise AirflowUnavailable(f"Airflow's health endpoint answered HTTP {resp.status_code}")
        return body

    # -- DAGs ---------------------------------------------------------------------------------------
    def get_dag(self, dag_id: str) -> Dag:
        return self._call(Dag, "GET", f"/dags/{_seg(dag_id)}")

    def find_dag(self, dag_id: str) -> Dag | None:
        try:
            return self.get_dag(dag_id)
        except AirflowNotFound:
            return None

    def find_dag_details(self, dag_id: str) -> DagDetails | None:
        """The DAG with its docs (GET /dags/{id}/details), or None when Airflow does not know it."""
        try:
            return self._call(DagDetails, "GET", f"/dags/{_seg(dag_id)}/details")
        except AirflowNotFound:
            return None

    def list_dags(self, *, dag_id_pattern: str, limit: int = 100, offset: int = 0) -> DagList:
        params = {"dag_id_pattern": dag_id_pattern, "limit": limit, "offset": offset, "order_by": "dag_id"}
        return self._call(DagList, "GET", "/dags", params=params)

    def set_paused(self, dag_id: str, paused: bool) -> Dag:
        return self._call(Dag, "PATCH", f"/dags/{_seg(dag_id)}", json={"is_paused": paused})

    def delete_dag(self, dag_id: str) -> None:
        try:
            self.request("DELETE", f"/dags/{_seg(dag_id)}")
        except AirflowNotFound:
            pass

    def reparse(self, file_token: str) -> None:
        """Ask the dag-processor to re-read the bundle now instead of at its next scan."""
        self.request("PUT", f"/parseDagFile/{_seg(file_token)}")

    def import_errors(self) -> list[DagImportError]:
        return self._call(ImportErrorList, "GET", "/importErrors", params={"limit": 1000}).import_errors

    # -- runs ---------------------------------------------------------------------------------------
    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any], note: str | None = None) -> DagRun:
        body: dict[str, Any] = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        if note:
            body["note"] = note
        return self._call(DagRun, "POST", f"/dags/{_seg(dag_id)}/dagRuns", json=body)

    def get_run(self, dag_id: str, run_id: str) -> DagRun:
        return self._call(DagRun, "GET", f"/dags/{_seg(dag_id)}/dagRuns/{_seg(run_id)}")

    def list_runs(self, dag_id: str, limit: int = 25, offset: int = 0) -> DagRunList:
        params = {"limit": limit, "offset": offset, "order_by": "-run_after"}
        return self._call(DagRunList, "GET", f"/dags/{_seg(dag_id)}/dagRuns", params=params)

    def runs_updated_since(self, since: str) -> list[DagRun]:
        """Runs of every DAG (`~`) whose row changed at or after `since` (ISO 8601), oldest change first."""
        return self._all_runs({"updated_at_gte": since, "order_by": "updated_at"})

    def active_runs(self) -> dict[tuple[str, str], DagRun]:
        """Every queued or running run in Airflow by (dag_id, run_id). (A GET: Airflow's POST …/list endpoints
        write an audit-log row per call.)"""
        return {(r.dag_id, r.dag_run_id): r for r in self._all_runs({"state": ["queued", "running"], "order_by": "id"})}

    def _all_runs(self, params: dict[str, Any]) -> list[DagRun]:
        """Every page of the runs of every DAG (`~`) that match `params`: one call per 100 runs."""
        runs: list[DagRun] = []
        while True:
            page = self._call(
                DagRunList, "GET", "/dags/~/dagRuns", params={**params, "limit": PAGE, "offset": len(runs)}
            )
            runs += page.dag_runs
            if not page.dag_runs or len(runs) >= page.total_entries:
                return runs

    def clear_tasks(self, dag_id: str, run_id: str, task_ids: list[str]) -> list[TaskInstance]:
        """Re-run `task_ids` of one run; the run goes back to queued (reset_dag_runs)."""
        body = {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": task_ids,
            "only_failed": False,
            "reset_dag_runs": True,
            "include_upstream": False,
            "include_downstream": False,
        }
        return self._call(
            TaskInstanceList, "POST", f"/dags/{_seg(dag_id)}/clearTaskInstances", json=body
        ).task_instances

    def xcom_value(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """The list endpoint carries no values, so each value is one call (the caller fetches each once)."""
        path = f"/dags/{_seg(dag_id)}/dagRuns/{_seg(run_id)}/taskInstances/{_seg(task_id)}/xcomEntries/{_seg(key)}"
        return self._call(XComEntry, "GET", path).value

    def set_run_state(self, dag_id: str, run_id: str, state: str) -> DagRun:
        return self._call(DagRun, "PATCH", f"/dags/{_seg(dag_id)}/dagRuns/{_seg(run_id)}", json={"state": state})

    def set_task_states(self, dag_id: str, run_id: str, task_ids: list[str], state: str) -> list[str]:
        """One bulk call; setting running tasks to failed makes Airflow kill them. Returns errors."""
        entities = [{"task_id": t, "new_state": state} for t in task_ids]
        data = self._json(
            "PATCH",
            f"/dags/{_seg(dag_id)}/dagRuns/{_seg(run_id)}/taskInstances",
            json={"actions": [{"action": "update", "entities": entities}]},
        )
        return [str(e) for e in (data or {}).get("update", {}).get("errors", [])]

    def task_instances(self, dag_id: str, run_id: str) -> list[TaskInstance]:
        path = f"/dags/{_seg(dag_id)}/dagRuns/{_seg(run_id)}/taskInstances"
        return self._call(TaskInstanceList, "GET", path, params={"limit": 1000}).task_instances

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> TaskInstance:
        path = f"/dags/{_seg(dag_id)}/dagRuns/{_seg(run_id)}/taskInstances/{_seg(task_id)}"
        return self._call(TaskInstance, "GET", path)

    def _hitl_path(self, dag_id: str, run_id: str, task_id: str) -> str:
        return f"/dags/{_seg(dag_id)}/dagRuns/{_seg(run_id)}/taskInstances/{_seg(task_id)}/-1/hitlDetails"

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str) -> HitlDetail:
        """A human-in-the-loop task's question and answer (404 until the task has asked)."""
        return self._call(HitlDetail, "GET", self._hitl_path(dag_id, run_id, task_id))

    def answer_hitl(
        self, dag_id: str, run_id: str, task_id: str, chosen_options: list[str], params_input: dict[str, Any]
    ) -> None:
        """Answer a waiting human-in-the-loop task (Airflow resumes it). 409: it has an answer already."""
        body = {"chosen_options": chosen_options, "params_input": params_input}
        self.request("PATCH", self._hitl_path(dag_id, run_id, task_id), json=body)

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> list[LogEvent]:
        data = self._json(
            "GET",
            f"/dags/{_seg(dag_id)}/dagRuns/{_seg(run_id)}/taskInstances/{_seg(task_id)}/logs/{_seg(try_number)}",
            params={"full_content": "true"},
            headers={"Accept": "application/json"},
        )
        content = data.get("content", []) if isinstance(data, dict) else []
        # Never the host's paths (log files, Airflow home): every reader of a task log reads it through here.
        return [
            LogEvent.model_validate(e)
            for e in sanitized([e if isinstance(e, dict) else {"event": str(e)} for e in content])
        ]

    # -- connections --------------------------------------------------------------------------------
    def upsert_connection(self, conn: dict[str, Any], attempts: int = 3, timeout: float | None = None) -> None:
        """PATCH, or POST when missing. Idempotent, so an HTTP 5xx (Airflow's metadata database busy) is
        tried again, up to `attempts` times, after 0.5 s, 1 s… `timeout`: per call, instead of the client's."""
        how: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        for attempt in range(attempts):
            try:
                try:
                    self.request("PATCH", f"/connections/{_seg(conn['connection_id'])}", json=conn, **how)
                except AirflowNotFound:
                    self.request("POST", "/connections", json=conn, **how)
                return
            except AirflowRejected:
                raise  # the content: asking again changes nothing
            except UpstreamError:  # a 5xx; or 409: created meanwhile by another replica, PATCHed next time
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))

    def delete_connection(self, conn_id: str) -> None:
        try:
            self.request("DELETE", f"/connections/{_seg(conn_id)}")
        except AirflowNotFound:
            pass
