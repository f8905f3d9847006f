"""Fixtures of the service's API tests: the app on SQLite and on PostgreSQL, wired to a fake Airflow."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.airflow.client import AirflowClient
from service.config import Settings
from service.main import create_app
from tests.pg import admin, pg_url
from tests.service.fake_airflow import PASSWORD as AIRFLOW_PASSWORD
from tests.service.fake_airflow import FakeAirflow
from tests.service.helpers import Api, Service, example


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test module's PostgreSQL runs."""
    name = f"svc_unit_{uuid.uuid4().hex[:12]}"
    admin(f'CREATE DATABASE "{name}"')
    yield name
    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/svc.db"
    return pg_url(request.getfixturevalue("pg_database"))


@pytest.fixture
def svc(tmp_path: Path, database_url: str) -> Iterator[Service]:
    settings = Settings(
        data_dir=tmp_path / "data",
        dags_dir=tmp_path / "dags",
        database_url=database_url,
        airflow_url="http://airflow.test",
        airflow_password=AIRFLOW_PASSWORD,
        background_tasks=False,
        publish_timeout_seconds=5,  # only a safety net: the fake parses on request
    )
    app = create_app(settings)
    fake = FakeAirflow(settings.dags_dir)
    app.state.airflow.close()
    airflow = AirflowClient(
        settings.airflow_url or "",
        settings.airflow_username,
        lambda: AIRFLOW_PASSWORD,
        transport=fake.transport(),
    )
    app.state.airflow = app.state.publisher.airflow = airflow
    with TestClient(app) as client:  # runs the lifespan: migrations, sentinel DAG file
        if settings.sqlalchemy_url.startswith("postgresql"):
            with app.state.engine.begin() as conn:  # the module's database is shared: start empty
                conn.execute(text("TRUNCATE executions, pipeline_versions, pipelines, connections CASCADE"))
                conn.execute(text("UPDATE metrics_rollup SET sealed_through = NULL, watermark = NULL"))
        yield Service(app, client, fake, settings)


@pytest.fixture
def api(svc: Service) -> Api:
    """An admin of tenant 'acme'."""
    return svc.api("acme")


@pytest.fixture
def acme(api: Api) -> Api:
    """Tenant acme's admin, with the two connections the example definition uses."""
    api.create_connection("sales-database")
    api.create_connection("warehouse")
    return api


@pytest.fixture
def active(svc: Service, acme: Api) -> dict[str, Any]:
    """The example pipeline, published: ACTIVE, its DAG served by the fake Airflow."""
    created = acme.create_pipeline(example())
    svc.publish()
    pipeline = acme.pipeline(created["pipelineId"])
    assert pipeline["status"] == "ACTIVE", pipeline
    return pipeline
