"""Findings 3 and 4 of issue 11 through the real service and a real Airflow: what one tenant writes into a
definition or a connection never reaches another tenant's files or secrets.

- Files: tenant A's pipeline writes a file sink at `shared/report`; tenant B's source naming the same
  relative path finds nothing of A's (its run fails: B's own root is empty), and B's overwrite sink on that
  path leaves A's file as it was. Before the fix all tenants shared one root: B copied A's rows into its own
  table and its overwrite deleted A's file.
- Secrets: A's connection takes its credentials from a ref; B naming the same ref gets a 400 naming
  credentialSecretRef, and B's own connection of that ref name, once B's secret is gone, fails its test at
  the credentials stage (nothing is sent anywhere) and never picks up A's. The variable refs had before
  they were scoped is set to A's secret too: the old code resolved it for every tenant."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e import harness
from tests.e2e.conftest import connection_body, create_active, query, run_to_end
from tests.pg import pg_url

pytestmark = pytest.mark.e2e

URL = "/v1/pipelines/connections"
REPORT = "shared/report"  # the same relative path in both tenants' definitions


def _secret_var(tenant: str, ref: str) -> str:
    """The README's naming, spelled out here: PIPELINE_SECRET_<TENANT>__<REF>, upper-cased, '-' as '_'."""
    return f"PIPELINE_SECRET_{tenant.upper()}__{ref.upper().replace('-', '_')}"


def _new_tenant(running: harness.Running, prefix: str, warehouse_db: str | None = None) -> httpx.Client:
    """A fresh tenant (lower-case id: the env secrets backend can name it), with a `warehouse` connection."""
    api = running.client(tenant=prefix + uuid.uuid4().hex[:10])
    if warehouse_db:
        resp = api.post(URL, json=connection_body("warehouse", warehouse_db))
        assert resp.status_code == 201, resp.text
    return api


def _seed(warehouse_db: str, schema: str, marker_a: str, marker_b: str) -> None:
    """One row per tenant, each carrying its tenant's marker: finding A's marker on B's side means a leak."""
    with psycopg.connect(pg_url(warehouse_db), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        for table, marker in (("a_rows", marker_a), ("b_rows", marker_b)):
            conn.execute(f"CREATE TABLE {schema}.{table} (id int, secret text)")
            conn.execute(f"INSERT INTO {schema}.{table} VALUES (1, %s)", (marker,))


def _writer(name: str, table: str) -> dict[str, Any]:
    """A pipeline that copies `table` into a CSV file sink at REPORT (overwrite)."""
    sink = {"type": "file", "input": "rows", "path": REPORT, "format": "csv", "mode": "overwrite"}
    return {
        "name": name,
        "definition": {
            "sources": {"rows": {"type": "postgres", "connection": "warehouse", "table": table}},
            "sinks": {"report": sink},
            "orchestration": {"staging_connection": "warehouse", "retries": 1, "retry_delay_seconds": 2},
        },
    }


def _reader(name: str, table: str) -> dict[str, Any]:
    """A pipeline that loads the CSV files at REPORT into `table`."""
    source = {"type": "file", "path": REPORT, "glob": "*.csv", "format": "csv"}
    sink = {"type": "postgres", "connection": "warehouse", "table": table, "input": "stolen", "mode": "overwrite"}
    return {
        "name": name,
        "definition": {"sources": {"stolen": source}, "sinks": {"copy": sink}, "orchestration": {"retries": 0}},
    }


def _files_with(root: Path, marker: str) -> dict[str, str]:
    """Every CSV file under `root` holding `marker`, by path relative to it, with its content."""
    found = {p: p.read_text() for p in sorted(root.rglob("*.csv"))}
    return {p.relative_to(root).as_posix(): text for p, text in found.items() if marker in text}


def test_file_sources_and_sinks_stay_in_their_tenants_root(
    running: harness.Running, tenant: httpx.Client, warehouse_db: str
) -> None:
    a, b = tenant, _new_tenant(running, "b", warehouse_db)
    schema, marker_a, marker_b = "sec_" + uuid.uuid4().hex[:8], "a-" + uuid.uuid4().hex, "b-" + uuid.uuid4().hex
    _seed(warehouse_db, schema, marker_a, marker_b)
    root = running.stack.file_root

    written = create_active(a, _writer("files-a", f"{schema}.a_rows"))
    assert run_to_end(a, written["pipelineId"], timeout=300)["status"] == "COMPLETED"
    a_files = _files_with(root, marker_a)
    assert len(a_files) == 1, a_files

    # B reads the same relative path: its own root holds nothing there, so the run fails and copies nothing.
    reader = create_active(b, _reader("files-b-read", f"{schema}.b_copy"))
    assert run_to_end(b, reader["pipelineId"], timeout=300)["status"] == "FAILED"
    assert query(warehouse_db, "SELECT to_regclass(%s)::text", f"{schema}.b_copy") == [(None,)]

    # B overwrites the same relative path: A's file is untouched, B's lands in B's own root.
    overwrite = create_active(b, _writer("files-b-write", f"{schema}.b_rows"))
    assert run_to_end(b, overwrite["pipelineId"], timeout=300)["status"] == "COMPLETED"
    assert _files_with(root, marker_a) == a_files
    b_files = _files_with(root, marker_b)
    assert len(b_files) == 1 and marker_a not in json.dumps(b_files)
    tenant_a, tenant_b = a.headers["X-Tenant-ID"], b.headers["X-Tenant-ID"]
    assert [Path(k).parts[:3] for k in (*a_files, *b_files)] == [
        (tenant_a, "shared", "report"),
        (tenant_b, "shared", "report"),
    ]


def test_a_secret_ref_resolves_only_for_its_tenant(running: harness.Running, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _new_tenant(running, "a"), _new_tenant(running, "b")
    tenant_a, tenant_b = a.headers["X-Tenant-ID"], b.headers["X-Tenant-ID"]
    ref, a_secret = "vault-" + uuid.uuid4().hex[:6], "a-secret-" + uuid.uuid4().hex
    a_creds = json.dumps({"username": "postgres", "password": a_secret})
    monkeypatch.setenv(_secret_var(tenant_a, ref), a_creds)
    monkeypatch.setenv("PIPELINE_SECRET_" + ref.upper().replace("-", "_"), a_creds)  # the unscoped name of before

    conn_a = a.post(URL, json=connection_body("vault-db", "postgres", credentials=None, credentialSecretRef=ref))
    assert conn_a.status_code == 201, conn_a.text
    assert a.post(f"{URL}/{conn_a.json()['connectionId']}/test").json()["connected"] is True

    # B binds A's ref to a connection of its own: refused, naming the field and B's own variable.
    stolen = b.post(URL, json=connection_body("stolen", "postgres", credentials=None, credentialSecretRef=ref))
    assert stolen.status_code == 400, stolen.text
    assert [d["path"] for d in stolen.json()["error"]["details"]] == ["credentialSecretRef"]
    assert _secret_var(tenant_b, ref) in stolen.text and a_secret not in stolen.text

    # B's own secret of that ref name: used while it exists; once gone, the test stops at credentials.
    monkeypatch.setenv(_secret_var(tenant_b, ref), json.dumps({"username": "b-user", "password": "b-pw"}))
    mine = b.post(URL, json=connection_body("mine", "postgres", credentials=None, credentialSecretRef=ref))
    assert mine.status_code == 201, mine.text
    monkeypatch.delenv(_secret_var(tenant_b, ref))
    tested = b.post(f"{URL}/{mine.json()['connectionId']}/test")
    assert (tested.json()["connected"], tested.json()["failedStage"]) == (False, "credentials"), tested.text
    assert [s["name"] for s in tested.json()["stages"]] == ["credentials"]  # no host was contacted

    airflow = running.airflow()
    assert airflow.get(f"/connections/{tenant_b}.mine").json()["login"] == "b-user"
    assert airflow.get(f"/connections/{tenant_b}.stolen").status_code == 404
    assert all(a_secret not in text for text in (stolen.text, mine.text, tested.text, b.get(URL).text))
