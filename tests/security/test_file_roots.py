"""Finding 4 of issue 11: each tenant's `file` sources and sinks live in `<PIPELINE_FILE_ROOT>/<tenant>/`, the
tenant taken from the DAG id Airflow runs (`<tenant>.<pipeline>`), never from the definition; and s3 is
reached only with the connection's own keys.

Before the fix every tenant shared the one root: tenant B's source naming A's relative path read A's files,
and B's overwrite sink on the same path deleted them. The operators run here with `execute(context)` as
Airflow would, against a throwaway staging database."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from airflow.sdk.exceptions import AirflowFailException

from dag_factory.exceptions import DagFactoryError
from dag_factory.hooks.objects import S3Store, load_arrow, tenant_of, tenant_root
from dag_factory.hooks.postgres import PostgresHook
from dag_factory.operators import (
    CleanupStagingOperator,
    PrepareStagingOperator,
    StageObjectsOperator,
    WriteObjectsOperator,
    run_schema,
)
from tests.pg import pg_url

DB_CONN = "sec_files_pg"
KEYLESS_S3 = "sec_files_keyless_s3"


@pytest.fixture(scope="module")
def staging_db(make_database) -> str:  # type: ignore[no-untyped-def]
    return str(make_database("sec_files"))


@pytest.fixture(autouse=True)
def airflow_connections(staging_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Airflow connections the operators read: `AIRFLOW_CONN_<ID>` variables, as in tests/dag_factory."""
    pg = {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": staging_db}
    monkeypatch.setenv(f"AIRFLOW_CONN_{DB_CONN.upper()}", json.dumps(pg))
    keyless = {"conn_type": "aws", "extra": {"endpoint_url": "http://127.0.0.1:1", "region_name": "us-east-1"}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{KEYLESS_S3.upper()}", json.dumps(keyless))


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PIPELINE_FILE_ROOT", str(tmp_path / "files"))
    return (tmp_path / "files").resolve()


@pytest.fixture
def runs() -> Iterator[Any]:
    """run(tenant) -> the task context of a run of the DAG `<tenant>.p`, its staging schema ready."""
    made: list[dict[str, Any]] = []

    def run(tenant: str) -> dict[str, Any]:
        dag = SimpleNamespace(dag_id=f"{tenant}.p")
        context = {"run_id": f"manual__{uuid.uuid4()}", "params": {}, "dag": dag, "ti": dag}
        PrepareStagingOperator(task_id="prepare", conn_ids=[DB_CONN]).execute(context)
        made.append(context)
        return context

    yield run
    for context in made:
        CleanupStagingOperator(task_id="cleanup", conn_ids=[DB_CONN]).execute(context)


def read_files(path: str) -> StageObjectsOperator:
    return StageObjectsOperator(
        task_id="s", store="file", staging_conn_id=DB_CONN, dataset="d", path=path, format="csv"
    )


def write_as(context: dict[str, Any], secret: str) -> None:
    """The run's file sink writes one row carrying `secret` to `shared` (overwrite), as a pipeline would."""
    load_arrow(PostgresHook(DB_CONN), (run_schema(context), "d"), pa.table({"id": [1], "secret": [secret]}))
    sink = WriteObjectsOperator(
        task_id="w", store="file", staging_conn_id=DB_CONN, dataset="d", path="shared", format="csv", mode="overwrite"
    )
    assert sink.execute(context)["files"] == 1


def secrets_read(context: dict[str, Any], staging_db: str) -> list[str]:
    """What the run's file source reads at `shared`, as staged."""
    read_files("shared").execute(context)
    with psycopg.connect(pg_url(staging_db)) as conn:
        rows = conn.execute(f'SELECT secret FROM "{run_schema(context)}".d').fetchall()
    return [r[0] for r in rows]


def test_the_tenant_is_the_dag_ids_first_part() -> None:
    assert tenant_of("acme.daily-sales") == "acme"
    for not_a_pipeline in ("pipeline_service_sentinel", ".p", "../x.p", "a/b.p", ""):
        with pytest.raises(DagFactoryError, match="only in pipeline DAGs"):
            tenant_of(not_a_pipeline)


def test_a_tenant_reads_only_from_its_own_root(root: Path, runs: Any) -> None:
    write_as(runs("acme"), "tenant-a-only")
    with pytest.raises(AirflowFailException, match="no file object under 'shared'"):
        read_files("shared").execute(runs("globex"))  # the same relative path: globex's own, empty, root
    assert [p.relative_to(root).parts[:2] for p in root.rglob("*.csv")] == [("acme", "shared")]
    assert (root / "globex").is_dir()  # created on demand


def test_a_tenant_cannot_overwrite_or_delete_anothers_files(root: Path, runs: Any, staging_db: str) -> None:
    write_as(runs("acme"), "tenant-a-only")
    write_as(runs("globex"), "globex")  # overwrite of the same relative path
    assert secrets_read(runs("acme"), staging_db) == ["tenant-a-only"]
    assert secrets_read(runs("globex"), staging_db) == ["globex"]


def test_symlinks_out_of_a_tenant_root_are_refused(root: Path, runs: Any) -> None:
    write_as(runs("acme"), "tenant-a-only")
    (root / "globex").mkdir()
    (root / "globex" / "peek").symlink_to(root / "acme" / "shared")
    for path in ("peek", "../acme/shared"):
        with pytest.raises(AirflowFailException, match="outside the file root"):
            read_files(path).execute(runs("globex"))
    (root / "evil").symlink_to(root / "acme")  # a tenant root that is itself a link into another's
    with pytest.raises(DagFactoryError, match="not a directory of its own"):
        tenant_root("evil")
    with pytest.raises(AirflowFailException, match="not a directory of its own"):
        read_files("shared").execute(runs("evil"))


def test_a_dag_of_no_tenant_has_no_file_root(root: Path) -> None:
    context = {"run_id": "manual__x", "params": {}, "dag": SimpleNamespace(dag_id="handwritten")}
    with pytest.raises(AirflowFailException, match="only in pipeline DAGs"):
        read_files("shared").execute(context)


def test_s3_is_reached_only_with_the_connections_own_key() -> None:
    """A connection without keys would fall back to the workers' AWS identity, shared by every tenant."""
    with pytest.raises(DagFactoryError, match="no access key"):
        S3Store.from_connection(KEYLESS_S3, "any-bucket")
