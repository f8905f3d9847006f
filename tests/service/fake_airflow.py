"""A small, in-memory fake of the parts of Airflow 3's REST API the service uses.

It keeps its state in dicts and behaves like Airflow where the service depends on it: a JWT from
POST /auth/token guards /api/v2 (401 without it), PUT /parseDagFile/{token} makes the dag-processor
re-read the bundle folder (new files included), a file that cannot be imported becomes an import error
instead of a DAG, triggering an existing run_id is a 409, unknown things are 404s. Tests steer it through
its attributes (`down`, `broken`) and the helpers at the bottom (`set_run`, `add_log`).
"""

from __future__ import annotations

import ast
import itertools
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from dag_factory.spec.task_ids import (
    STAGING_SETUP_TASK_ID,
    TEARDOWN_TASK_ID,
    approval_task,
    quality_task,
    sink_task,
    source_task,
    transformation_task,
)

SENTINEL_DAG_ID = "pipeline_service_sentinel"
USERNAME, PASSWORD = "admin", "x"
_DONE = {"success", "failed", "skipped", "upstream_failed", "removed"}


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def read_config(path: Path) -> dict[str, Any]:
    """The JSON a generated DAG file hands to load_pipeline_dag(...), read without executing the file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_pipeline_dag":
            return dict(json.loads(ast.literal_eval(node.args[0])))
    raise ValueError(f"{path.name} does not call load_pipeline_dag")


def task_ids(definition: dict[str, Any]) -> list[str]:
    """The task ids dag_factory gives a definition's DAG (task groups prefix them)."""
    checked = dict.fromkeys(c["dataset"] for c in definition.get("quality_checks", []))
    return [
        STAGING_SETUP_TASK_ID,
        *(source_task(name) for name in definition["sources"]),
        *(transformation_task(t["name"]) for t in definition.get("transformations", [])),
        *(approval_task(g["name"]) for g in definition.get("approvals", [])),
        *(sink_task(name) for name in definition["sinks"]),
        *(quality_task(name) for name in checked),
        TEARDOWN_TASK_ID,
    ]


def _iso(value: str) -> str:
    """An ISO timestamp in the fake's own spelling (UTC, 'Z'), so that strings compare like times."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json(status: int, body: Any = None) -> httpx.Response:
    return httpx.Response(status, json=body) if body is not None else httpx.Response(status)


def _missing(what: str) -> httpx.Response:
    return _json(404, {"detail": f"{what} was not found"})


class FakeAirflow:
    def __init__(self, dags_dir: Path):
        self.dags_dir = Path(dags_dir)
        self.down = False  # True: every request fails with httpx.ConnectError
        self.fail_next: list[int] = []  # HTTP statuses the next authenticated API requests get instead
        self.health_response: httpx.Response | None = None  # overrides GET /monitor/health
        self.broken: dict[str, str] = {}  # DAG file name -> the traceback importing it raises
        # DAG ids whose next parse reads the file as it was before the last write (a parse that began
        # before the service wrote it): parsed again, yet still serving the older revision.
        self.stale_parse: set[str] = set()
        # DAG ids whose next change of file is missed (as an S3 DAG bundle misses a same-size object rewritten
        # within the second its local copy was downloaded): served as before until the file is written again.
        self.missed_write: set[str] = set()
        self._missed_mtime: dict[str, int] = {}
        self.parsed_files: dict[str, dict[str, Any]] = {}  # DAG id -> the config of the file it serves
        self.dags: dict[str, dict[str, Any]] = {}
        self.dag_tasks: dict[str, list[str]] = {}
        self.import_errors: dict[str, dict[str, Any]] = {}  # by file path
        self.runs: dict[tuple[str, str], dict[str, Any]] = {}
        self.task_instances: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.logs: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
        self.connections: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.xcoms: dict[tuple[str, str, str], Any] = {}  # (dag_id, run_id, task_id) -> return_value
        self.run_updated: dict[tuple[str, str], str] = {}  # DagRun.updated_at: filterable, never returned
        self.cleared: list[dict[str, Any]] = []  # bodies of POST clearTaskInstances
        # (dag_id, run_id, task_id) -> a human-in-the-loop task's detail (made when it starts waiting)
        self.hitl: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.refuse_hitl = 0  # how many of the next HITL answers get HTTP 503 (metadata database busy)
        self._tokens: set[str] = set()
        self._file_tokens: dict[str, Path] = {}
        self._ids = itertools.count(1)
        # Airflow parsed the sentinel file (the service writes it at startup) long before any test.
        self._add_dag(SENTINEL_DAG_ID, self.dags_dir / "_pipeline_service_sentinel.py", [])

        dag, run = r"/api/v2/dags/(?P<dag_id>[^/]+)", r"/dagRuns/(?P<run_id>[^/]+)"
        self._routes: list[tuple[str, str, Callable[..., httpx.Response]]] = [
            ("POST", r"/auth/token", self._login),
            ("GET", r"/api/v2/monitor/health", self._health),
            ("GET", r"/api/v2/dags", self._list_dags),
            ("GET", dag, self._get_dag),
            ("GET", dag + r"/details", self._get_dag),
            ("PATCH", dag, self._patch_dag),
            ("DELETE", dag, self._delete_dag),
            ("PUT", r"/api/v2/parseDagFile/(?P<token>[^/]+)", self._parse),
            ("GET", r"/api/v2/importErrors", self._list_import_errors),
            ("POST", dag + r"/dagRuns", self._trigger),
            ("GET", dag + r"/dagRuns", self._list_runs),
            ("POST", dag + r"/clearTaskInstances", self._clear),
            (
                "GET",
                dag + run + r"/taskInstances/(?P<task_id>[^/]+)/xcomEntries/(?P<key>[^/]+)",
                self._xcom,
            ),
            ("GET", dag + run, self._get_run),
            ("PATCH", dag + run, self._patch_run),
            ("GET", dag + run + r"/taskInstances", self._list_tis),
            ("PATCH", dag + run + r"/taskInstances", self._bulk_tis),
            ("GET", dag + run + r"/taskInstances/(?P<task_id>[^/]+)/logs/(?P<try_number>\d+)", self._log),
            ("GET", dag + run + r"/taskInstances/(?P<task_id>[^/]+)/-1/hitlDetails", self._get_hitl),
            ("PATCH", dag + run + r"/taskInstances/(?P<task_id>[^/]+)/-1/hitlDetails", self._patch_hitl),
            ("GET", dag + run + r"/taskInstances/(?P<task_id>[^/]+)", self._get_ti),
            ("POST", r"/api/v2/connections", self._post_connection),
            ("PATCH", r"/api/v2/connections/(?P<conn_id>[^/]+)", self._patch_connection),
            ("DELETE", r"/api/v2/connections/(?P<conn_id>[^/]+)", self._delete_connection),
        ]

    # -- the transport -------------------------------------------------------------------------------
    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        path = request.url.path
        self.requests.append((request.method, path))
        if path.startswith("/api/v2/") and path != "/api/v2/monitor/health":
            if request.headers.get("Authorization", "").removeprefix("Bearer ") not in self._tokens:
                return _json(401, {"detail": "Not authenticated"})
            if self.fail_next:
                return _json(self.fail_next.pop(0), {"detail": "database is locked"})
        known_path = False
        for method, pattern, handler in self._routes:
            match = re.fullmatch(pattern, path)
            if match and method == request.method:
                return handler(request, **match.groupdict())
            known_path = known_path or match is not None
        return _json(405, {"detail": "Method Not Allowed"}) if known_path else _missing(path)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def calls(self, method: str, pattern: str) -> list[str]:
        return [p for m, p in self.requests if m == method and re.fullmatch(pattern, p)]

    # -- auth, health ----------------------------------------------------------------------------------
    def _login(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        if (body.get("username"), body.get("password")) != (USERNAME, PASSWORD):
            return _json(401, {"detail": "Invalid credentials"})
        token = uuid.uuid4().hex
        self._tokens.add(token)
        return _json(201, {"access_token": token})

    def _health(self, request: httpx.Request) -> httpx.Response:
        if self.health_response is not None:
            return self.health_response
        healthy = {"status": "healthy", "latest_heartbeat": now()}
        return _json(200, {"metadatabase": {"status": "healthy"}, "scheduler": healthy, "dag_processor": healthy})

    # -- DAGs and parsing -----------------------------------------------------------------------------
    def _add_dag(self, dag_id: str, path: Path, tasks: list[str], doc: str | None = None) -> None:
        token = self.dags.get(dag_id, {}).get("file_token") or uuid.uuid4().hex
        self._file_tokens[token] = path
        self.dags[dag_id] = {
            "doc_md": doc,
            "dag_id": dag_id,
            "fileloc": str(path),
            "file_token": token,
            "is_paused": self.dags.get(dag_id, {}).get("is_paused", True),  # paused upon creation
            "is_stale": False,
            "has_import_errors": False,
            "last_parsed_time": now(),
        }
        self.dag_tasks[dag_id] = tasks

    def _rescan(self) -> None:
        """What the dag-processor does after a parse request: refresh the bundle, parse its files."""
        for path in sorted(self.dags_dir.glob("pipeline_*.py")):
            if path.name in self.broken:
                self.import_errors[str(path)] = {
                    "import_error_id": next(self._ids),
                    "filename": str(path),
                    "bundle_name": "dags-folder",
                    "timestamp": now(),
                    "stack_trace": self.broken[path.name],
                }
                continue
            self.import_errors.pop(str(path), None)
            config = read_config(path)
            if config["dag_id"] in self.stale_parse and config["dag_id"] in self.parsed_files:
                self.stale_parse.discard(config["dag_id"])
                config = self.parsed_files[config["dag_id"]]
            if config["dag_id"] in self.missed_write and config["dag_id"] in self.parsed_files:
                missed = self._missed_mtime.setdefault(config["dag_id"], path.stat().st_mtime_ns)
                if path.stat().st_mtime_ns == missed:
                    config = self.parsed_files[config["dag_id"]]
                else:
                    self.missed_write.discard(config["dag_id"])
            self.parsed_files[config["dag_id"]] = config
            self._add_dag(config["dag_id"], path, task_ids(config["definition"]), config.get("doc"))

    def _list_dags(self, request: httpx.Request) -> httpx.Response:
        """dag_id_pattern is a substring match, as in Airflow (SQL LIKE '%pattern%')."""
        pattern = request.url.params.get("dag_id_pattern", "")
        dags = sorted((d for d in self.dags.values() if pattern in d["dag_id"]), key=lambda d: d["dag_id"])
        offset, limit = int(request.url.params.get("offset", 0)), int(request.url.params.get("limit", 100))
        return _json(200, {"dags": dags[offset : offset + limit], "total_entries": len(dags)})

    def _get_dag(self, request: httpx.Request, dag_id: str) -> httpx.Response:
        return _json(200, self.dags[dag_id]) if dag_id in self.dags else _missing(f"Dag {dag_id}")

    def _patch_dag(self, request: httpx.Request, dag_id: str) -> httpx.Response:
        if dag_id not in self.dags:
            return _missing(f"Dag {dag_id}")
        self.dags[dag_id]["is_paused"] = bool(json.loads(request.content)["is_paused"])
        return _json(200, self.dags[dag_id])

    def _delete_dag(self, request: httpx.Request, dag_id: str) -> httpx.Response:
        if self.dags.pop(dag_id, None) is None:
            return _missing(f"Dag {dag_id}")
        for key in [k for k in self.runs if k[0] == dag_id]:
            del self.runs[key]
            del self.task_instances[key]
        return _json(204)

    def _parse(self, request: httpx.Request, token: str) -> httpx.Response:
        if token not in self._file_tokens:
            return _missing("file token")
        self._rescan()
        return _json(201)

    def _list_import_errors(self, request: httpx.Request) -> httpx.Response:
        errors = list(self.import_errors.values())
        return _json(200, {"import_errors": errors, "total_entries": len(errors)})

    # -- runs, task instances, logs -------------------------------------------------------------------
    def _trigger(self, request: httpx.Request, dag_id: str) -> httpx.Response:
        if dag_id not in self.dags:
            return _missing(f"Dag {dag_id}")
        body = json.loads(request.content)
        key = (dag_id, body["dag_run_id"])
        if key in self.runs:
            return _json(409, {"detail": f"DAG run {key[1]} already exists"})
        if not isinstance(body.get("conf") or {}, dict):
            return _json(422, {"detail": "conf must be an object"})
        self.run_updated[key] = now()
        self.runs[key] = {
            "dag_id": dag_id,
            "dag_run_id": key[1],
            "run_type": "manual",
            "state": "queued",
            "conf": body.get("conf") or {},
            "note": body.get("note"),
            "logical_date": body.get("logical_date"),
            "run_after": now(),
            "start_date": None,
            "end_date": None,
        }
        self.task_instances[key] = {
            t: {
                "task_id": t,
                "dag_id": dag_id,
                "dag_run_id": key[1],
                "map_index": -1,
                "state": None,
                "try_number": 0,
                "start_date": None,
                "end_date": None,
                "duration": None,
            }
            for t in self.dag_tasks[dag_id]
        }
        return _json(200, self.runs[key])

    def _list_runs(self, request: httpx.Request, dag_id: str) -> httpx.Response:
        """`~` lists the runs of every DAG; updated_at_gte filters on the run's last change, state (repeated) on
        the run's state."""
        if dag_id != "~" and dag_id not in self.dags:
            return _missing(f"Dag {dag_id}")
        since = request.url.params.get("updated_at_gte")
        states = request.url.params.get_list("state")
        runs = [
            r
            for key, r in self.runs.items()
            if dag_id in ("~", key[0])
            and (since is None or self.run_updated.get(key, "") >= _iso(since))
            and (not states or r["state"] in states)
        ]
        runs.sort(key=lambda r: r["run_after"], reverse=request.url.params.get("order_by", "").startswith("-"))
        offset, limit = int(request.url.params.get("offset", 0)), int(request.url.params.get("limit", 100))
        return _json(200, {"dag_runs": runs[offset : offset + limit], "total_entries": len(runs)})

    def _clear(self, request: httpx.Request, dag_id: str) -> httpx.Response:
        body = json.loads(request.content)
        key = (dag_id, body["dag_run_id"])
        if key not in self.runs:
            return _missing(f"DagRun {body['dag_run_id']}")
        self.cleared.append(body)
        tis = self.task_instances[key]
        cleared = [tis[t] for t in body["task_ids"] if t in tis]
        for ti in cleared:
            ti.update(state=None, end_date=None, duration=None)
        if body.get("reset_dag_runs", True):
            self.runs[key].update(state="queued", end_date=None)
            self.run_updated[key] = now()
        return _json(200, {"task_instances": cleared, "total_entries": len(cleared)})

    def _xcom(self, request: httpx.Request, dag_id: str, run_id: str, task_id: str, key: str) -> httpx.Response:
        value = self.xcoms.get((dag_id, run_id, task_id)) if key == "return_value" else None
        if value is None:
            return _missing(f"XCom entry with key: `{key}`")
        return _json(200, {"key": key, "task_id": task_id, "dag_id": dag_id, "run_id": run_id, "value": value})

    def _get_run(self, request: httpx.Request, dag_id: str, run_id: str) -> httpx.Response:
        run = self.runs.get((dag_id, run_id))
        return _json(200, run) if run else _missing(f"DagRun {run_id}")

    def _patch_run(self, request: httpx.Request, dag_id: str, run_id: str) -> httpx.Response:
        if (dag_id, run_id) not in self.runs:
            return _missing(f"DagRun {run_id}")
        state = json.loads(request.content)["state"]
        if state not in ("queued", "success", "failed"):
            return _json(400, {"detail": f"invalid state {state}"})
        self.set_run(dag_id, run_id, state)
        return _json(200, self.runs[(dag_id, run_id)])

    def _list_tis(self, request: httpx.Request, dag_id: str, run_id: str) -> httpx.Response:
        if (dag_id, run_id) not in self.runs:
            return _missing(f"DagRun {run_id}")
        tis = list(self.task_instances[(dag_id, run_id)].values())
        return _json(200, {"task_instances": tis, "total_entries": len(tis)})

    def _bulk_tis(self, request: httpx.Request, dag_id: str, run_id: str) -> httpx.Response:
        """Airflow 3's bulk endpoint: only "update" with a new_state, which is all the service sends."""
        if (dag_id, run_id) not in self.runs:
            return _missing(f"DagRun {run_id}")
        tis = self.task_instances[(dag_id, run_id)]
        result: dict[str, list[Any]] = {"success": [], "errors": []}
        for action in json.loads(request.content)["actions"]:
            if action["action"] != "update":
                return _json(400, {"detail": f"unsupported action {action['action']}"})
            for entity in action["entities"]:
                task_id = entity["task_id"]
                if task_id not in tis:
                    result["errors"].append({"error": f"{task_id} not found", "status_code": 404})
                    continue
                self.set_run(dag_id, run_id, self.runs[(dag_id, run_id)]["state"], {task_id: entity["new_state"]})
                result["success"].append(f"{dag_id}.{run_id}.{task_id}")
        return _json(200, {"create": None, "update": result, "delete": None})

    def _get_ti(self, request: httpx.Request, dag_id: str, run_id: str, task_id: str) -> httpx.Response:
        ti = self.task_instances.get((dag_id, run_id), {}).get(task_id)
        return _json(200, ti) if ti is not None else _missing(f"TaskInstance {task_id}")

    def _get_hitl(self, request: httpx.Request, dag_id: str, run_id: str, task_id: str) -> httpx.Response:
        detail = self.hitl.get((dag_id, run_id, task_id))
        return _json(200, detail) if detail is not None else _missing(f"HITL detail of {task_id}")

    def _patch_hitl(self, request: httpx.Request, dag_id: str, run_id: str, task_id: str) -> httpx.Response:
        """Like Airflow: 409 when it has an answer already; the waiting task resumes (success, or failed on
        Reject, as dag_factory's ApprovalGateOperator does)."""
        detail = self.hitl.get((dag_id, run_id, task_id))
        if detail is None:
            return _missing(f"HITL detail of {task_id}")
        if self.refuse_hitl:
            self.refuse_hitl -= 1
            return _json(503, {"detail": "database is locked"})
        if detail["response_received"]:
            return _json(409, {"detail": "already updated"})
        body = json.loads(request.content)
        if set(body["chosen_options"]) - set(detail["options"]):
            return _json(400, {"detail": "invalid option"})
        detail.update(
            chosen_options=body["chosen_options"],
            params_input=body.get("params_input") or {},
            responded_at=now(),
            response_received=True,
        )
        state = "success" if body["chosen_options"] == ["Approve"] else "failed"
        self.set_run(dag_id, run_id, self.runs[(dag_id, run_id)]["state"], {task_id: state})
        return _json(200, {"chosen_options": body["chosen_options"], "params_input": detail["params_input"]})

    def wait_for_input(self, dag_id: str, run_id: str, task_id: str, *, since_seconds: float = 10.0) -> None:
        """The HITL task `task_id` asks and waits (AWAITING_INPUT), having started `since_seconds` ago."""
        from datetime import timedelta

        self.set_run(dag_id, run_id, "running", {task_id: "awaiting_input"})
        ti = self.task_instances[(dag_id, run_id)][task_id]
        started = datetime.now(UTC) - timedelta(seconds=since_seconds)
        ti["start_date"], ti["try_number"] = started.isoformat().replace("+00:00", "Z"), 1
        self.hitl[(dag_id, run_id, task_id)] = {
            "subject": f"Approval gate '{task_id}'",
            "options": ["Approve", "Reject"],
            "chosen_options": None,
            "params_input": {},
            "responded_at": None,
            "response_received": False,
        }

    def _log(self, request: httpx.Request, dag_id: str, run_id: str, task_id: str, try_number: str) -> httpx.Response:
        if task_id not in self.task_instances.get((dag_id, run_id), {}):
            return _missing(f"TaskInstance {task_id}")
        events = self.logs.get((dag_id, run_id, task_id, int(try_number)), [])
        return _json(200, {"content": events, "continuation_token": None})

    # -- connections ----------------------------------------------------------------------------------
    def _post_connection(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["connection_id"] in self.connections:
            return _json(409, {"detail": f"Connection {body['connection_id']} already exists"})
        self.connections[body["connection_id"]] = body
        return _json(201, body)

    def _patch_connection(self, request: httpx.Request, conn_id: str) -> httpx.Response:
        if conn_id not in self.connections:
            return _missing(f"Connection {conn_id}")
        self.connections[conn_id].update(json.loads(request.content))
        return _json(200, self.connections[conn_id])

    def _delete_connection(self, request: httpx.Request, conn_id: str) -> httpx.Response:
        if self.connections.pop(conn_id, None) is None:
            return _missing(f"Connection {conn_id}")
        return _json(204)

    # -- what the scheduler and the workers would do (called by tests) --------------------------------
    def start_scheduled_run(self, dag_id: str, run_id: str) -> None:
        """What Airflow's scheduler does when a timetable fires: a run of type `scheduled`, conf empty."""
        key = (dag_id, run_id)
        self.run_updated[key] = now()
        self.runs[key] = {
            "dag_id": dag_id,
            "dag_run_id": run_id,
            "run_type": "scheduled",
            "state": "queued",
            "conf": {},
            "note": None,
            "logical_date": now(),
            "run_after": now(),
            "start_date": None,
            "end_date": None,
        }
        self.task_instances[key] = {
            t: {
                "task_id": t,
                "dag_id": dag_id,
                "dag_run_id": run_id,
                "map_index": -1,
                "state": None,
                "try_number": 0,
                "start_date": None,
                "end_date": None,
                "duration": None,
            }
            for t in self.dag_tasks[dag_id]
        }

    def set_run(self, dag_id: str, run_id: str, state: str, tasks: dict[str, str | None] | None = None) -> None:
        """Move a run, and the task instances named in `tasks` ({task_id: state}), to new states."""
        run = self.runs[(dag_id, run_id)]
        run["state"] = state
        self.run_updated[(dag_id, run_id)] = now()
        if state != "queued":
            run["start_date"] = run["start_date"] or now()
        if state in ("success", "failed"):
            run["end_date"] = now()
        tis = self.task_instances[(dag_id, run_id)]
        for task_id, ti_state in (tasks or {}).items():
            ti = tis[task_id]
            ti["state"] = ti_state
            if ti_state in _DONE | {"running"}:
                ti["try_number"] = max(ti["try_number"], 1)
                ti["start_date"] = ti["start_date"] or now()
            if ti_state in _DONE:
                ti["end_date"], ti["duration"] = now(), 1.5

    def add_log(self, dag_id: str, run_id: str, task_id: str, *events: dict[str, Any], try_number: int = 1) -> None:
        self.logs.setdefault((dag_id, run_id, task_id, try_number), []).extend(events)
