"""Runs a local Apache Airflow 3 (api-server, scheduler, dag-processor, triggerer; LocalExecutor) as child
processes. Used by `make up` and by the end-to-end test harness, so both run Airflow the same way.

The distributed profile (`make up-distributed`, `Distributed`): Airflow on PostgreSQL with the CeleryExecutor
(a Redis broker, PostgreSQL as Celery's result backend) and two Celery workers with their own hostnames; with
`S3Bucket`, the DAG files come from an S3 DAG bundle and the task logs go to the same bucket (remote logging).

Never imports airflow: it only spawns the `airflow` command of the active virtual environment.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
S3_CONN_ID = "pipeline_service_s3"  # the Airflow connection of the bundle and the logs (an env var, never stored)
BUNDLE_NAME = "pipelines"  # the S3 DAG bundle's name (the local profile uses Airflow's default `dags-folder`)


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    """SIGTERM a process started with start_new_session (its whole group), SIGKILL after `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def kill_tree(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a process and every process it started, whatever their process group (a task process runs in
    one of its own): a crash, nothing gets to clean up."""
    if proc is None or proc.poll() is not None:
        return
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


@dataclass(frozen=True)
class S3Bucket:
    """An S3 bucket (on a moto server locally and in CI) holding the DAG bundle under `dags_prefix` and the
    task logs under `logs_prefix`."""

    bucket: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    dags_prefix: str = "dags"
    logs_prefix: str = "logs"

    def airflow_connection(self) -> str:
        """The AWS connection as Airflow reads it from AIRFLOW_CONN_<ID> (JSON form)."""
        extra: dict[str, str] = {"region_name": self.region}
        if self.endpoint_url:
            extra["endpoint_url"] = self.endpoint_url
        conn: dict[str, object] = {"conn_type": "aws", "extra": extra}
        if self.access_key_id:
            conn.update(login=self.access_key_id, password=self.secret_access_key or "")
        return json.dumps(conn)


@dataclass(frozen=True)
class Distributed:
    """The CeleryExecutor: `broker_url` (redis://...), PostgreSQL as result backend (Airflow's own database,
    which must then be PostgreSQL), one worker process per name, each serving its live logs on its own port
    (log_port_of); with `s3`, the S3 DAG bundle and remote logs."""

    broker_url: str
    workers: tuple[str, ...] = ("worker-1", "worker-2")
    log_port: int = 8793
    concurrency: int = 4
    s3: S3Bucket | None = None

    def log_port_of(self, name: str) -> int:
        """The first worker's is `log_port` (the port Airflow's api-server asks for live logs); the others' come
        after the triggerer's (`log_port` + 1)."""
        index = self.workers.index(name)
        return self.log_port if index == 0 else self.log_port + 1 + index


def _persisted(path: Path, make: Callable[[], str]) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    path.write_text(value)
    path.chmod(0o600)
    return value


class AirflowStack:
    def __init__(
        self,
        home: Path,
        port: int,
        dags_dir: Path,
        database_url: str | None = None,
        *,
        allowed_networks: str | None = None,
        denied_endpoints: tuple[str, ...] = (),
        lineage_url: str | None = None,
        lineage_api_key: str | None = None,
        distributed: Distributed | None = None,
    ):
        """`allowed_networks` / `denied_endpoints`: the network policy of the tasks and callbacks (see
        connections/network.py); the api-server and the log servers are always added to the denied ones.

        `lineage_url` / `lineage_api_key`: the service that receives Airflow's OpenLineage events (its
        POST /api/v1/lineage); without them OpenLineage stays off."""
        self.home = Path(home).resolve()
        self.port = port
        self.dags_dir = Path(dags_dir).resolve()
        self.database_url = database_url or f"sqlite:///{self.home / 'airflow.db'}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.url = f"http://127.0.0.1:{port}"
        self.allowed_networks = allowed_networks
        self.denied_endpoints = denied_endpoints
        self.lineage_url = lineage_url
        self.lineage_api_key = lineage_api_key
        self.distributed = distributed
        if distributed is not None and not self.database_url.startswith("postgresql"):
            raise ValueError("the distributed profile needs Airflow's database on PostgreSQL (database_url)")

    @property
    def components(self) -> tuple[str, ...]:
        """The processes of this stack: Airflow's four, and the Celery workers of the distributed profile."""
        return COMPONENTS + (self.distributed.workers if self.distributed else ())

    def _command(self, name: str) -> list[str]:
        if name == "api-server":
            return ["airflow", name, "--port", str(self.port)]
        if self.distributed is not None and name in self.distributed.workers:
            # The name Celery knows the worker by (distinct on one machine); Airflow's TI.hostname stays the host's.
            concurrency = str(self.distributed.concurrency)
            return ["airflow", "celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", concurrency]
        return ["airflow", name]

    def _component_env(self, name: str, env: dict[str, str]) -> dict[str, str]:
        if self.distributed is None or name not in self.distributed.workers:
            return env
        return {**env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.distributed.log_port_of(name))}

    def _s3_env(self, s3: S3Bucket) -> dict[str, str]:
        bundle = {
            "name": BUNDLE_NAME,
            "classpath": "airflow.providers.amazon.aws.bundles.s3.S3DagBundle",
            "kwargs": {
                "bucket_name": s3.bucket,
                "prefix": s3.dags_prefix,
                "aws_conn_id": S3_CONN_ID,
                "refresh_interval": 60,
            },
        }
        return {
            f"AIRFLOW_CONN_{S3_CONN_ID.upper()}": s3.airflow_connection(),
            # Where the dag-processor and the workers keep their copy of the bundle (default: a folder under
            # /tmp shared by every Airflow of the machine).
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(self.home / "dag_bundles"),
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([bundle]),
            "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
            "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": f"s3://{s3.bucket}/{s3.logs_prefix}",
            "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": S3_CONN_ID,
        }

    def distributed_env(self) -> dict[str, str]:
        """The executor, the broker and, with S3, the DAG bundle and remote logging."""
        d = self.distributed
        if d is None:
            return {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
        backend = "db+" + self.database_url.replace("postgresql+psycopg2://", "postgresql://")
        env = {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": d.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": backend,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(d.concurrency),
            # A broker outage is waited out (dag_factory/airflow_celery.py): each publish retries the connection
            # for up to 5 s, then the executor publishes again at its next heartbeats, up to 60 times (minutes).
            "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "dag_factory.airflow_celery.CELERY_CONFIG",
            "AIRFLOW__CELERY__OPERATION_TIMEOUT": "5",
            "AIRFLOW__CELERY__TASK_PUBLISH_MAX_RETRIES": "60",
            # A message lost with the broker (Redis keeps nothing on disk) leaves its task queued: requeued
            # after 2 minutes instead of 10.
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "120",
            # A task whose worker died (SIGKILL) is seen by its missing heartbeat and retried: after 30 s
            # (checked every 2 s), not the default 5 min.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        }
        if d.s3 is not None:
            env.update(self._s3_env(d.s3))
        return env

    def openlineage_env(self) -> dict[str, str]:
        """Airflow's openlineage provider posting every DAG and task event to the service, with the standard
        http transport (api_key auth: `Authorization: Bearer <key>`)."""
        if not self.lineage_url or not self.lineage_api_key:
            return {"AIRFLOW__OPENLINEAGE__DISABLED": "True"}
        transport = {
            "type": "http",
            "url": self.lineage_url.rstrip("/"),
            "endpoint": "api/v1/lineage",
            "timeout": 5,
            "auth": {"type": "api_key", "apiKey": self.lineage_api_key},
            # The transport's default (5 retries with back-off) would hold a task ~10 s when the service is
            # down; the events of that moment are lost either way, so give up after one retry.
            "retry": {"total": 1, "connect": 1, "read": 1, "backoff_factor": 0.2},
        }
        return {
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
            # The job namespace of every event (DAG and task jobs): which Airflow reported it.
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "pipeline-service",
            # Emit from a thread of the task process rather than a forked child, and wait for it at most 5 s
            # (default 10): a slow receiver never holds a task longer than that.
            "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",
            "AIRFLOW__OPENLINEAGE__EXECUTION_TIMEOUT": "5",
        }

    def network_policy_env(self) -> dict[str, str]:
        """PIPELINE_ALLOWED_NETWORKS and PIPELINE_DENIED_ENDPOINTS for the Airflow processes: what the
        environment says, plus this stack's own endpoints (its api-server, the workers' and triggerer's log
        servers) and the caller's (the service), which no task may call."""
        allowed = self.allowed_networks
        if allowed is None:
            allowed = os.environ.get("PIPELINE_ALLOWED_NETWORKS", "")
        logs = [8793, 8794]  # the log servers: a worker's (the local profile's), the triggerer's
        if self.distributed is not None:
            logs += [self.distributed.log_port_of(name) for name in self.distributed.workers]
        own = [f"127.0.0.1:{self.port}", *(f"*:{port}" for port in sorted(set(logs))), *self.denied_endpoints]
        configured = os.environ.get("PIPELINE_DENIED_ENDPOINTS", "")
        denied = ",".join(e for e in [configured, *own] if e)
        return {"PIPELINE_ALLOWED_NETWORKS": allowed, "PIPELINE_DENIED_ENDPOINTS": denied}

    @property
    def file_root(self) -> Path:
        """$PIPELINE_FILE_ROOT, else `files` next to Airflow's home in the data dir (<data dir>/files)."""
        configured = os.environ.get("PIPELINE_FILE_ROOT")
        return Path(configured).resolve() if configured else self.home.parent / "files"

    @property
    def password_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json.generated"

    def _secrets(self) -> dict[str, str]:
        from cryptography.fernet import Fernet

        s = self.home / "secrets"
        return {
            "AIRFLOW__CORE__FERNET_KEY": _persisted(s / "fernet_key", lambda: Fernet.generate_key().decode()),
            "AIRFLOW__API_AUTH__JWT_SECRET": _persisted(s / "jwt_secret", lambda: secrets.token_urlsafe(32)),
            "AIRFLOW__API__SECRET_KEY": _persisted(s / "api_secret", lambda: secrets.token_urlsafe(32)),
        }

    def env(self) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)
        env = {
            **os.environ,
            # `airflow` spawns `airflow ...` subprocesses: this venv's bin must come first on PATH.
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_dir),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": self.url + "/",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": self.url + "/execution/",
            # A task's calls to the execution API (start, heartbeat, XCom) give up after 5 s by default: on a busy
            # machine (SQLite under the api-server) that fails tasks before any of their code runs.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
            # New files are pushed through PUT /parseDagFile; this is only the fallback scan.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "60",
            # Every file is also re-parsed every 30 s by default: with each parse paying the import of
            # dag_factory (~0.4 s of CPU), 35 pipelines alone took half a core. A file changes only when the
            # service writes it, and then the service asks for its parse: the periodic one is a safety net.
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
            "TQDM_DISABLE": "1",
            # Where file sources and sinks may read and write (see dag_factory.hooks.objects.file_root).
            "PIPELINE_FILE_ROOT": str(self.file_root),
            **self.network_policy_env(),
            **self.openlineage_env(),
            **self._secrets(),
            **self.distributed_env(),
        }
        return env

    def _ensure_password(self) -> None:
        # Airflow's simple auth manager keeps generated passwords in this file and reuses it when present.
        if not self.password_file.exists():
            self.password_file.write_text(json.dumps({"admin": secrets.token_urlsafe(18)}))
            self.password_file.chmod(0o600)

    def password(self) -> str:
        return str(json.loads(self.password_file.read_text())["admin"])

    def migrate(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        self._ensure_password()
        log = open(self.home / "logs" / "db-migrate.log", "ab")
        subprocess.run(["airflow", "db", "migrate"], env=self.env(), check=True, stdout=log, stderr=subprocess.STDOUT)

    def start(self) -> None:
        env = self.env()
        for name in self.components:
            self._spawn(name, env)

    def _spawn(self, name: str, env: dict[str, str]) -> None:
        log = open(self.home / "logs" / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            self._command(name),
            env=self._component_env(name, env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def healthy(self) -> bool:
        try:
            health = httpx.get(self.url + "/api/v2/monitor/health", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return False
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all((health.get(p) or {}).get("status") == "healthy" for p in parts)

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited ({proc.returncode}); see {self.home}/logs/{name}.log")
            if self.healthy():
                return
            time.sleep(1)
        raise TimeoutError(f"Airflow did not become healthy within {timeout:.0f} s; logs in {self.home}/logs")

    def kill_component(self, name: str) -> None:
        """SIGKILL a component and every process it started (a crashed host, for the fault tests)."""
        kill_tree(self.procs.pop(name, None))

    def stop_component(self, name: str) -> None:
        stop_process(self.procs.pop(name, None))

    def start_component(self, name: str) -> None:
        """(Re)start one component stopped by stop_component, e.g. the api-server in an outage test."""
        if name not in self.components:
            raise ValueError(f"unknown Airflow component {name!r} (one of {', '.join(self.components)})")
        if name in self.procs and self.procs[name].poll() is None:
            return
        self._spawn(name, self.env())

    def stop(self) -> None:
        for name in list(self.procs):
            self.stop_component(name)
