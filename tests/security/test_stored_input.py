"""Finding 7: hostile input is refused (400 naming the field), never stored: NUL and control characters,
unbounded strings, a header name with a trailing newline. Every header value of an http connection is a
secret: encrypted at rest, masked in every answer, sent to Airflow only."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text

from tests.service.helpers import Api, Service, connection_body, example, expect_error

URL = "/v1/pipelines/connections"
TOKEN = "hvs.tok-Q7-never-in-the-database"


def _http(name: str = "crm", **headers: str) -> dict[str, Any]:
    return {"name": name, "type": "http", "url": "https://crm.example.com/api", "properties": {"headers": headers}}


REFUSED_CONNECTIONS = [
    ("NUL in the database", connection_body("c", database="sales\x00db"), "database"),
    ("NUL in the username", connection_body("c", credentials={"username": "u\x00", "password": "p"}), "credentials"),
    ("NUL in the password", connection_body("c", credentials={"username": "u", "password": "p\x00w"}), "credentials"),
    (
        "a 1,000,000-character password",
        connection_body("c", credentials={"username": "u", "password": "p" * 10**6}),
        "credentials",
    ),  # noqa: E501
    (
        "a line break in the url",
        {**connection_body("c", host=None, port=None, database=None), "type": "sql", "url": "postgresql://h/db\n"},
        "url",
    ),  # noqa: E501
    (
        "NUL in an s3 prefix",
        {
            "name": "c",
            "type": "s3",
            "credentials": {"username": "k", "password": "s"},
            "properties": {"bucket": "raw-data", "prefix": "a\x00"},
        },
        "properties.prefix",
    ),  # noqa: E501
    ("a header named 'Authorization\\n'", _http(**{"Authorization\n": "Bearer x"}), "properties.headers"),
    ("NUL in a header value", _http(**{"X-Team": "a\x00b"}), "properties.headers"),
    ("a 10,000-character header value", _http(**{"X-Team": "a" * 10_000}), "properties.headers"),
    ("21 headers", _http(**{f"X-H{i}": "v" for i in range(21)}), "properties.headers"),
]


@pytest.mark.parametrize(("case", "body", "path"), REFUSED_CONNECTIONS, ids=[c[0] for c in REFUSED_CONNECTIONS])
def test_hostile_connection_fields_are_400(api: Api, case: str, body: dict[str, Any], path: str) -> None:
    """Each was stored as given (PostgreSQL turned the NULs into 500s); now a 400 that names the field."""
    error = expect_error(api.post(URL, json=body), 400, "validation_error")
    assert any(d["path"].startswith(path) for d in error["details"]), (case, error)
    assert api.get(URL).json()["total"] == 0


def test_every_header_value_is_a_secret(svc: Service, api: Api) -> None:
    """X-Vault-Token / Private-Token were stored in plain text and listed; now only Airflow gets the value."""
    created = api.post(URL, json=_http(**{"X-Vault-Token": TOKEN, "Private-Token": TOKEN, "Accept": "text/csv"}))
    assert created.status_code == 201, created.text
    shown = [created.json(), api.get(f"{URL}/{created.json()['connectionId']}").json(), *api.get(URL).json()["items"]]
    for body in shown:
        assert TOKEN not in json.dumps(body) and "text/csv" not in json.dumps(body), body
        assert body["properties"]["headers"] == dict.fromkeys(["X-Vault-Token", "Private-Token", "Accept"], "********")
    with svc.app.state.engine.connect() as conn:
        assert TOKEN not in json.dumps([list(r) for r in conn.execute(text("SELECT * FROM connections"))], default=str)
    extra = json.loads(svc.fake.connections["acme.crm"]["extra"])
    assert extra["X-Vault-Token"] == TOKEN and extra["Accept"] == "text/csv"


def test_a_masked_header_sent_back_keeps_its_value(svc: Service, api: Api) -> None:
    """GET, edit, PUT: a masked value means "keep"; a new value replaces; a mask for an unknown header is 400."""
    created = api.post(URL, json=_http(**{"X-Vault-Token": TOKEN})).json()
    url = f"{URL}/{created['connectionId']}"
    body = _http(**{"X-Vault-Token": "********", "X-Team": "data"})
    assert api.put(url, json=body).status_code == 200
    extra = json.loads(svc.fake.connections["acme.crm"]["extra"])
    assert extra["X-Vault-Token"] == TOKEN and extra["X-Team"] == "data"
    unknown = api.put(url, json=_http(**{"X-Other": "********"}))
    expect_error(unknown, 400, "validation_error", "properties.headers.X-Other")


REFUSED_REQUESTS = [
    ("NUL in a pipeline description", "/v1/pipelines", {**example(), "description": "a\x00b"}, "description"),
    (
        "a 5,000-character pipeline description",
        "/v1/pipelines",
        {**example(), "description": "d" * 5000},
        "description",
    ),  # noqa: E501
    ("a 1,000-character tag", "/v1/pipelines", {**example(), "tags": ["t" * 1000]}, "tags[0]"),
    (
        "NUL in a cron expression",
        "/v1/pipelines/schedules",
        {"pipelineId": "p", "cronExpression": "0 * * * *\x00"},
        "cronExpression",
    ),  # noqa: E501
    (
        "a line break in a time zone",
        "/v1/pipelines/schedules",
        {"pipelineId": "p", "cronExpression": "@daily", "timezone": "UTC\n"},
        "timezone",
    ),  # noqa: E501
    (
        "NUL in a template's create description",
        "/v1/pipelines/templates/retail/inventory_snapshot/create",
        {"pipelineName": "x", "description": "\x00"},
        "description",
    ),  # noqa: E501
    (
        "a 1,000-character template tag",
        "/v1/pipelines/templates/retail/inventory_snapshot/create",
        {"pipelineName": "x", "tags": ["t" * 1000]},
        "tags[0]",
    ),  # noqa: E501
]


@pytest.mark.parametrize(("case", "url", "body", "path"), REFUSED_REQUESTS, ids=[c[0] for c in REFUSED_REQUESTS])
def test_other_request_strings_are_bounded_and_plain(api: Api, case: str, url: str, body: Any, path: str) -> None:
    """Pipelines, schedules and templates: every string has a bound and refuses control characters."""
    expect_error(api.post(url, json=body), 400, "validation_error", path)


def test_descriptions_keep_their_line_breaks(api: Api) -> None:
    """Free text may span lines: only NUL and other control characters are refused."""
    api.create_connection("sales-database")
    api.create_connection("warehouse")
    assert api.post("/v1/pipelines", json={**example(), "description": "line one\nline two\tend"}).status_code == 201
