"""The service app on SQLite with the fake Airflow at the HTTP transport, for the API-level security suites.

The same wiring as the `svc` fixture of tests/service, as a context manager, so that a suite can hold one app
for a whole module (the fuzz run and the cross-tenant probes are many requests over the same seeded data).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from service.airflow.client import AirflowClient
from service.config import Settings
from service.main import create_app
from tests.service.fake_airflow import PASSWORD as AIRFLOW_PASSWORD
from tests.service.fake_airflow import FakeAirflow
from tests.service.helpers import Service


@contextmanager
def running_service(tmp_path: Path) -> Iterator[Service]:
    """The app (lifespan running) over a fresh SQLite database, its Airflow a FakeAirflow."""
    settings = Settings(
        data_dir=tmp_path / "data",
        dags_dir=tmp_path / "dags",
        database_url=f"sqlite:///{tmp_path}/svc.db",
        airflow_url="http://airflow.test",
        airflow_password=AIRFLOW_PASSWORD,
        jwt_secret="security-suite-secret-0123456789abcdef",
        background_tasks=False,
        publish_timeout_seconds=5,
    )
    app = create_app(settings)
    fake = FakeAirflow(settings.dags_dir)
    app.state.airflow.close()
    airflow = AirflowClient(
        settings.airflow_url or "", settings.airflow_username, lambda: AIRFLOW_PASSWORD, transport=fake.transport()
    )
    app.state.airflow = app.state.publisher.airflow = airflow
    with TestClient(app) as client:
        yield Service(app, client, fake, settings)
