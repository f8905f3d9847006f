"""Starts what `make up` starts — a real Airflow (service.stack) and the service on a real HTTP port —
in a scratch directory. Used by the end-to-end tests and by the benchmarks in bench/."""

from __future__ import annotations

import contextlib
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn

from connections.network import LOOPBACK_NETWORKS
from service.auth import mint_token
from service.config import Settings
from service.main import create_app
from service.pipelines.dagfile import ensure_sentinel
from service.stack import AirflowStack

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    stack: AirflowStack
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread
    app: Any
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    def client(
        self, tenant: str = "acme", roles: tuple[str, ...] = ("admin",), subject: str = "tester"
    ) -> httpx.Client:
        token = mint_token(self.settings.resolved_jwt_secret(), tenant=tenant, roles=list(roles), subject=subject)
        c = httpx.Client(
            base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant}
        )
        self.clients.append(c)
        return c

    def airflow(self) -> httpx.Client:
        """A client of Airflow's own REST API, to check what the service did there."""
        token = httpx.post(
            self.stack.url + "/auth/token", json={"username": "admin", "password": self.stack.password()}
        ).json()["access_token"]
        c = httpx.Client(base_url=self.stack.url + "/api/v2", timeout=30, headers={"Authorization": f"Bearer {token}"})
        self.clients.append(c)
        return c

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.stack.stop()


def start_service(settings: Settings) -> tuple[uvicorn.Server, threading.Thread, Any]:
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the service did not start")
        time.sleep(0.1)
    return server, thread, app


def start(base_dir: Path, database_url: str | None = None) -> Running:
    data_dir = base_dir / "data"
    dags_dir = data_dir / "dags"
    ensure_sentinel(dags_dir)
    service_port = free_port()
    # Loopback allowed, as `make up` does: the tests' databases and servers are on this machine. The
    # service's own port and Airflow's stay refused to every tenant (the network policy).
    stack = AirflowStack(
        data_dir / "airflow",
        free_port(),
        dags_dir,
        allowed_networks=LOOPBACK_NETWORKS,
        denied_endpoints=(f"127.0.0.1:{service_port}",),
        # OpenLineage on, as `make up` has it: Airflow posts its events to the service (the key generated
        # into the data dir, where the service's Settings below read it).
        lineage_url=f"http://127.0.0.1:{service_port}",
        lineage_api_key=Settings(data_dir=data_dir).resolved_openlineage_api_key(),
    )
    stack.migrate()
    stack.start()
    try:
        stack.wait_healthy()
        settings = Settings(
            data_dir=data_dir,
            dags_dir=dags_dir,
            database_url=database_url,
            airflow_url=stack.url,
            port=service_port,
            background_interval_seconds=1.0,
            allowed_networks=LOOPBACK_NETWORKS,
        )
        server, thread, app = start_service(settings)
    except BaseException:
        stack.stop()
        raise
    return Running(stack=stack, settings=settings, server=server, thread=thread, app=app)


def wait_for(fetch, done, timeout: float = 120, interval: float = 0.5):  # type: ignore[no-untyped-def]
    """Poll `fetch()` until `done(value)`; return the last value (the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    value = fetch()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(interval)
        value = fetch()
    return value


@contextlib.contextmanager
def example_stack(tenant: str = "bench", service_database: bool = False) -> Iterator[tuple[Running, httpx.Client]]:
    """For the benchmarks: throwaway databases `sales` (seeded with examples/sales_seed.sql) and `warehouse`,
    a running stack, and a client of `tenant` that has the example's two connections. Drops it all after."""
    from tests.pg import admin, pg_url

    suffix = uuid.uuid4().hex[:6]
    sales, warehouse, svc_db = f"bench_sales_{suffix}", f"bench_wh_{suffix}", f"bench_svc_{suffix}"
    databases = [sales, warehouse, *([svc_db] if service_database else [])]
    running = None
    try:
        for db in databases:
            admin(f'CREATE DATABASE "{db}"')
        with psycopg.connect(pg_url(sales), autocommit=True) as conn:
            conn.execute((REPO / "examples" / "sales_seed.sql").read_text())
        with tempfile.TemporaryDirectory() as tmp:
            running = start(Path(tmp), database_url=pg_url(svc_db) if service_database else None)
            api = running.client(tenant=tenant)
            for name, db in (("sales-database", sales), ("warehouse", warehouse)):
                body = {"name": name, "type": "postgres", "host": "127.0.0.1", "port": 5432, "database": db,
                        "credentials": {"username": "postgres", "password": ""}}  # fmt: skip
                resp = api.post("/v1/pipelines/connections", json=body)
                assert resp.status_code == 201, resp.text
            yield running, api
    finally:
        if running is not None:
            running.stop()
        for db in databases:
            admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
