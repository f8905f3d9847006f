"""The distributed profile on one machine (`make up-distributed`, and the reliability tests): what a multi-host
deployment runs, as separate processes talking over the network only.

- PostgreSQL (the machine's server) holds both metadata stores: Airflow's database and the service's, created
  when missing;
- Airflow with the CeleryExecutor: Redis as broker, PostgreSQL as result backend, two Celery workers with their
  own hostnames, the scheduler, dag-processor, triggerer and api-server (service.stack);
- an S3 bucket (a moto server on loopback standing in for S3) holding the DAG files, which Airflow reads as an
  S3 DAG bundle, and the task logs (remote logging);
- two service replicas (`pipeline-service serve`) on two ports sharing the service database and the bucket.

Never imports airflow: it spawns commands of the active virtual environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg

from service.auth import mint_token
from service.config import Settings
from service.pipelines.dagfile import S3Store, ensure_sentinel
from service.stack import AirflowStack, Distributed, S3Bucket, kill_tree, stop_process

# moto's server accepts any credentials: these only have to be the same everywhere.
LOCAL_S3_KEY, LOCAL_S3_SECRET = "pipeline-service", "pipeline-service-local"


def pg_url(admin_url: str, database: str) -> str:
    return admin_url.rsplit("/", 1)[0] + "/" + database


def ensure_database(admin_url: str, database: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{database}"')


def _wait_http(url: str, what: str, proc: subprocess.Popen[bytes] | None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode})")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(f"{what} did not answer at {url} within {timeout:.0f} s")


@dataclass
class Profile:
    """Everything of the distributed profile under `data_dir`; `start()` / `stop()`; replicas by index."""

    data_dir: Path
    pg_admin_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    airflow_database: str = "pipeline_airflow"
    service_database: str = "pipeline_service"
    broker_url: str = "redis://127.0.0.1:6379/0"
    airflow_port: int = 8080
    service_ports: tuple[int, ...] = (8000, 8001)
    s3_port: int = 9000
    bucket: str = "pipeline-service"
    # Extra environment of the service replicas (e.g. PIPELINE_BACKGROUND_INTERVAL_SECONDS in the tests).
    extra_env: dict[str, str] = field(default_factory=dict)
    replicas: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    moto: subprocess.Popen[bytes] | None = None
    stack: AirflowStack | None = None

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def service_url(self, index: int = 0) -> str:
        return f"http://127.0.0.1:{self.service_ports[index]}"

    def s3(self) -> S3Bucket:
        return S3Bucket(
            self.bucket, endpoint_url=self.s3_url, access_key_id=LOCAL_S3_KEY, secret_access_key=LOCAL_S3_SECRET
        )

    def airflow(self) -> AirflowStack:
        if self.stack is None:
            self.stack = AirflowStack(
                self.data_dir / "airflow",
                self.airflow_port,
                self.data_dir / "airflow" / "dags-unused",  # the DAG files come from the S3 bundle
                pg_url(self.pg_admin_url, self.airflow_database).replace("postgresql://", "postgresql+psycopg2://"),
                allowed_networks=os.environ.get("PIPELINE_ALLOWED_NETWORKS") or "127.0.0.0/8,::1/128",
                denied_endpoints=self.own_endpoints(),
                lineage_url=self.service_url(0),
                lineage_api_key=self.settings().resolved_openlineage_api_key(),
                distributed=Distributed(broker_url=self.broker_url, s3=self.s3()),
            )
        return self.stack

    def own_endpoints(self) -> tuple[str, ...]:
        """What no tenant may reach (the network policy of the replicas and of the tasks): every replica, the
        bucket holding all tenants' DAG files and logs, the Celery broker (a message there runs a task), Airflow."""
        broker = urlsplit(self.broker_url)
        broker_port = broker.port or (5672 if broker.scheme.startswith("amqp") else 6379)
        ports = (*self.service_ports, self.s3_port, self.airflow_port)
        return (*(f"127.0.0.1:{port}" for port in ports), f"{broker.hostname or '127.0.0.1'}:{broker_port}")

    def settings(self) -> Settings:
        """The replicas' settings as far as the data dir holds them (secrets generated there on first use)."""
        return Settings(data_dir=self.data_dir)

    def token(self, tenant: str, roles: tuple[str, ...] = ("admin",), subject: str = "tester") -> str:
        return mint_token(self.settings().resolved_jwt_secret(), tenant=tenant, roles=list(roles), subject=subject)

    def service_env(self, index: int) -> dict[str, str]:
        s3 = self.s3()
        return {
            **os.environ,
            "PIPELINE_DATA_DIR": str(self.data_dir),
            "PIPELINE_DATABASE_URL": pg_url(self.pg_admin_url, self.service_database),
            "PIPELINE_HOST": "127.0.0.1",
            "PIPELINE_PORT": str(self.service_ports[index]),
            "PIPELINE_AIRFLOW_URL": self.airflow().url,
            "PIPELINE_ALLOWED_NETWORKS": os.environ.get("PIPELINE_ALLOWED_NETWORKS") or "127.0.0.0/8,::1/128",
            "PIPELINE_DENIED_ENDPOINTS": ",".join(
                e for e in (os.environ.get("PIPELINE_DENIED_ENDPOINTS", ""), *self.own_endpoints()) if e
            ),
            "PIPELINE_DAG_BUNDLE_S3_BUCKET": s3.bucket,
            "PIPELINE_DAG_BUNDLE_S3_PREFIX": s3.dags_prefix,
            "PIPELINE_DAG_BUNDLE_S3_ENDPOINT_URL": self.s3_url,
            "PIPELINE_DAG_BUNDLE_S3_ACCESS_KEY_ID": LOCAL_S3_KEY,
            "PIPELINE_DAG_BUNDLE_S3_SECRET_ACCESS_KEY": LOCAL_S3_SECRET,
            **self.extra_env,
        }

    # -- parts --------------------------------------------------------------------------------------
    def start_s3(self) -> None:
        binary = Path(sys.executable).parent / "moto_server"
        log = open(self.data_dir / "logs" / "s3.log", "ab")
        self.moto = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(self.s3_port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_http(self.s3_url + "/moto-api/", "the S3 server (moto)", self.moto)
        import boto3

        client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.s3_url,
            region_name="us-east-1",
            aws_access_key_id=LOCAL_S3_KEY,
            aws_secret_access_key=LOCAL_S3_SECRET,
        )
        if self.bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=self.bucket)

    def start_replica(self, index: int) -> None:
        proc = self.replicas.get(index)
        if proc is not None and proc.poll() is None:
            return
        log = open(self.data_dir / "logs" / f"service-{index + 1}.log", "ab")
        self.replicas[index] = subprocess.Popen(
            [str(Path(sys.executable).parent / "pipeline-service"), "serve"],
            env=self.service_env(index),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_http(self.service_url(index) + "/health", f"service replica {index + 1}", self.replicas[index])

    def kill_replica(self, index: int) -> None:
        """SIGKILL a replica (a crash: no shutdown of its workers)."""
        kill_tree(self.replicas.pop(index, None))

    def stop_replica(self, index: int) -> None:
        stop_process(self.replicas.pop(index, None))

    # -- all of it ----------------------------------------------------------------------------------
    def start(self, progress: bool = False) -> None:
        def say(message: str) -> None:
            if progress:
                print(message, flush=True)

        say(f"PostgreSQL: databases {self.airflow_database} (Airflow) and {self.service_database} (service) ...")
        ensure_database(self.pg_admin_url, self.airflow_database)
        ensure_database(self.pg_admin_url, self.service_database)
        say(f"S3 (moto) on {self.s3_url}, bucket {self.bucket} ...")
        self.start_s3()
        # The sentinel DAG in the bundle before Airflow's first scan (the replicas write it too).
        s3 = self.s3()
        ensure_sentinel(
            S3Store(
                s3.bucket,
                s3.dags_prefix,
                endpoint_url=self.s3_url,
                access_key_id=LOCAL_S3_KEY,
                secret_access_key=LOCAL_S3_SECRET,
            )
        )
        stack = self.airflow()
        say("Airflow: migrating its database ...")
        stack.migrate()
        say("Airflow: api-server, scheduler, dag-processor, triggerer, 2 Celery workers ...")
        stack.start()
        stack.wait_healthy(timeout=240)
        for index in range(len(self.service_ports)):
            say(f"service replica {index + 1} on {self.service_url(index)} ...")
            self.start_replica(index)

    def stop(self) -> None:
        for index in list(self.replicas):
            self.stop_replica(index)
        if self.stack is not None:
            self.stack.stop()
        stop_process(self.moto, timeout=10)
