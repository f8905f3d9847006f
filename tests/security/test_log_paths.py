"""Finding 10 (log paths): the logs endpoints never show the Airflow host's absolute paths. Airflow opens each
task log with the paths of its log files; log lines and exception texts name files under its home."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.service.helpers import Api, Service

HOME = "/srv/airflow-home-Q10"
LOG_FILE = f"{HOME}/logs/dag_id=acme.daily-sales-etl/run_id=r/task_id=prepare_staging/attempt=1.log"
EVENTS: list[dict[str, Any]] = [
    {"timestamp": "2026-02-13T10:00:00.000000Z", "event": "::group::Log message source details"},
    {"timestamp": "2026-02-13T10:00:00.000000Z", "event": LOG_FILE},
    {"event": "Could not read served logs: http://worker-7:8793/log/dag_id=acme.x/attempt=1.log"},
    {"timestamp": "2026-02-13T10:00:00.000000Z", "event": "::endgroup::"},
    {"level": "info", "event": f"Filling up the DagBag from {HOME}/dags/x.py"},
    {
        "timestamp": "2026-02-13T10:00:00.200000Z",
        "level": "error",
        "event": "Task failed",
        "filename": f"{HOME}/dags/x.py",
        "error_detail": [
            {
                "exc_type": "FileNotFoundError",
                "exc_value": f"[Errno 2] No such file: '{HOME}/files/acme/in.csv'",
                "frames": [{"filename": f"{HOME}/lib/task.py", "lineno": 1, "name": "run"}],
            }
        ],
    },
]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: what Airflow's log says does not depend on the store."""
    return f"sqlite:///{tmp_path}/svc.db"


def test_logs_show_no_host_paths(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    """The execution's logs, one task's logs and the Airflow passthrough: the lines stay, the paths go."""
    execution = acme.execute(active["pipelineId"])
    svc.dispatch()
    dag_id, run_id = execution["dagId"], execution["executionId"]
    svc.fake.set_run(dag_id, run_id, "running", {"prepare_staging": "failed"})
    svc.fake.add_log(dag_id, run_id, "prepare_staging", *EVENTS)
    answers = [
        acme.get(f"/v1/pipelines/executions/{run_id}/logs").text,
        acme.get(f"/v1/pipelines/executions/{run_id}/logs", params={"task": "prepare_staging"}).text,
        acme.get(f"/v1/airflow/dags/{dag_id}/runs/{run_id}/tasks/prepare_staging/logs").text,
    ]
    for text in answers:
        assert HOME not in text and "dag_id=" not in text and "worker-7" not in text, text
        assert "Filling up the DagBag from …/x.py" in text, text
        assert "FileNotFoundError: [Errno 2] No such file: '…/in.csv'" in text, text
