"""The distributed profile (service/distributed.py) for the fault tests: Airflow on PostgreSQL with Celery (two
workers), the S3 DAG bundle and remote logs on a moto server, two service replicas as separate processes, with a
Redis of its own (a test restarts it) and throwaway databases. One profile for the package, torn down after it."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from service.distributed import Profile
from tests.e2e.fixtures import connection_body
from tests.e2e.harness import free_port
from tests.pg import PG_ADMIN_URL, pg_url

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Redis:
    """A redis-server of the tests' own on a free loopback port (nothing kept on disk)."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while (
            subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).stdout.strip() != b"PONG"
        ):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@dataclass
class Cluster:
    """The running profile and clients of its two replicas for one tenant."""

    profile: Profile
    redis: Redis
    sales_db: str
    warehouse_db: str

    def api(self, replica: int, tenant: str, roles: tuple[str, ...] = ("admin",)) -> httpx.Client:
        token = self.profile.token(tenant, roles)
        headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant}
        return httpx.Client(base_url=self.profile.service_url(replica), headers=headers, timeout=30)

    def airflow(self) -> httpx.Client:
        stack = self.profile.airflow()
        token = httpx.post(
            stack.url + "/auth/token", json={"username": "admin", "password": stack.password()}, timeout=30
        ).json()["access_token"]
        return httpx.Client(base_url=stack.url + "/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def tenant(self) -> str:
        """A fresh tenant with the example's two connections (created through replica 1)."""
        tenant = "r" + uuid.uuid4().hex[:10]
        with self.api(0, tenant) as api:
            for name, db in (("sales-database", self.sales_db), ("warehouse", self.warehouse_db)):
                resp = api.post("/v1/pipelines/connections", json=connection_body(name, db))
                assert resp.status_code == 201, resp.text
        return tenant


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory, make_database: Any) -> Iterator[Cluster]:
    sales, warehouse = make_database("rel_sales"), make_database("rel_wh")
    with psycopg.connect(pg_url(sales), autocommit=True) as conn:
        conn.execute((REPO / "examples" / "sales_seed.sql").read_text())
    redis = Redis(free_port())
    redis.start()
    suffix = uuid.uuid4().hex[:8]
    profile = Profile(
        tmp_path_factory.mktemp("distributed"),
        pg_admin_url=PG_ADMIN_URL,
        airflow_database=f"rel_airflow_{suffix}",
        service_database=f"rel_service_{suffix}",
        broker_url=redis.url,
        airflow_port=free_port(),
        service_ports=(free_port(), free_port()),
        s3_port=free_port(),
        bucket=f"pipelines-{suffix}",
        extra_env={"PIPELINE_BACKGROUND_INTERVAL_SECONDS": "1"},
    )
    try:
        profile.start()
        yield Cluster(profile, redis, sales, warehouse)
    finally:
        profile.stop()
        redis.stop()
        for db in (profile.airflow_database, profile.service_database):
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
