"""Per-type validation (errors name the field) and materialisation as Airflow connections."""

from __future__ import annotations

import json
from typing import Any

import pytest

from connections import ConnectionSpec, Credentials, InvalidConnection, airflow_connection, build_spec

CREDS = Credentials("user", "pw-secret")


def spec(type_: str, **fields: Any) -> ConnectionSpec:
    args: dict[str, Any] = {"host": None, "port": None, "database": None, "url": None, "properties": {}}
    args.update(fields)
    return build_spec(type_, **args)


def error_paths(type_: str, **fields: Any) -> list[str]:
    with pytest.raises(InvalidConnection) as caught:
        spec(type_, **fields)
    return [e["path"] for e in caught.value.errors]


def test_postgres_defaults_and_airflow_body() -> None:
    s = spec("postgres", host="db", database="sales", properties={"sslMode": "require", "connectionTimeout": 7000})
    assert (s.host, s.port, s.database) == ("db", 5432, "sales")
    body = airflow_connection("t.sales", s, CREDS)
    assert (body["conn_type"], body["host"], body["port"], body["schema"]) == ("postgres", "db", 5432, "sales")
    assert (body["login"], body["password"]) == ("user", "pw-secret")
    assert json.loads(body["extra"]) == {"sslmode": "require", "connect_timeout": 7}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("jdbc:postgresql://db.internal:5433/sales", ("db.internal", 5433, "sales")),
        ("postgresql://db/sales", ("db", 5432, "sales")),
        ("postgresql+psycopg://10.0.0.1:6000/w", ("10.0.0.1", 6000, "w")),
    ],
)
def test_jdbc_and_sql_urls(url: str, expected: tuple[str, int, str]) -> None:
    for type_ in ("jdbc", "sql"):
        s = spec(type_, url=url)
        assert (s.host, s.port, s.database) == expected
        assert airflow_connection("t.x", s, CREDS)["conn_type"] == "postgres"


@pytest.mark.parametrize(
    "url",
    ["mysql://db/sales", "postgresql://u:secret@db/sales", "postgresql://db/sales?sslmode=require", "postgresql://db"],
)
def test_bad_urls_name_url(url: str) -> None:
    assert error_paths("sql", url=url) == ["url"]


def test_url_with_credentials_never_echoes_them() -> None:
    with pytest.raises(InvalidConnection) as caught:
        spec("sql", url="postgresql://u:hunter2-secret@db/sales")
    assert "hunter2-secret" not in str(caught.value) and "hunter2-secret" not in json.dumps(caught.value.errors)


def test_url_and_host_together_name_the_clash() -> None:
    assert error_paths("jdbc", url="postgresql://db/sales", host="db") == ["host"]


def test_postgres_requires_host_and_database() -> None:
    assert error_paths("postgres") == ["host", "database"]


@pytest.mark.parametrize(
    ("type_", "properties", "path"),
    [
        ("postgres", {"sslMode": "sometimes"}, "properties.sslMode"),
        ("postgres", {"connectionTimeout": 0}, "properties.connectionTimeout"),
        ("postgres", {"colour": "red"}, "properties.colour"),
        ("s3", {"bucket": "b", "region": "mars"}, "properties.bucket"),
        ("s3", {"bucket": "my-bucket", "region": "mars"}, "properties.region"),
        ("s3", {"bucket": "my-bucket", "endpointUrl": "ftp://x"}, "properties.endpointUrl"),
        ("s3", {"bucket": "my-bucket", "endpointUrl": "http://k:s@x"}, "properties.endpointUrl"),
        ("s3", {}, "properties.bucket"),
        ("http", {"headers": {"Authorization": "Bearer x"}}, "properties.headers"),
        ("http", {"headers": {"bad header": "x"}}, "properties.headers"),
        ("http", {"healthPath": "health"}, "properties.healthPath"),
        ("http", {"scheme": "ftp"}, "properties.scheme"),
    ],
)
def test_properties_are_checked_per_type(type_: str, properties: dict[str, Any], path: str) -> None:
    fields: dict[str, Any] = {"properties": properties}
    if type_ == "postgres":
        fields.update(host="db", database="d")
    if type_ == "http":
        fields.update(host="api.example.com")
    assert path in error_paths(type_, **fields)


def test_sensitive_header_message_does_not_echo_its_value() -> None:
    with pytest.raises(InvalidConnection) as caught:
        spec("http", host="h", properties={"headers": {"X-Api-Key": "key-value-123"}})
    assert "key-value-123" not in json.dumps(caught.value.errors)


def test_s3_is_an_aws_connection_with_region_and_endpoint_in_extra() -> None:
    s = spec("s3", properties={"bucket": "raw-data", "region": "eu-west-1", "endpointUrl": "http://minio:9000"})
    assert (s.host, s.port, s.database) == ("minio", 9000, "raw-data")
    body = airflow_connection("t.lake", s, Credentials("AKIAEXAMPLE", "aws-secret"))
    assert body["conn_type"] == "aws"
    assert (body["login"], body["password"]) == ("AKIAEXAMPLE", "aws-secret")
    assert json.loads(body["extra"]) == {"region_name": "eu-west-1", "endpoint_url": "http://minio:9000"}
    assert "aws-secret" not in body["extra"]


def test_s3_defaults_to_aws_and_refuses_host() -> None:
    s = spec("s3", properties={"bucket": "raw-data", "region": "eu-west-1"})
    assert (s.host, s.port) == ("s3.eu-west-1.amazonaws.com", 443)
    assert airflow_connection("t.lake", s, None)["login"] is None
    assert error_paths("s3", host="x", properties={"bucket": "raw-data"}) == ["host"]


def test_http_from_url_and_from_host() -> None:
    s = spec("http", url="https://api.example.com:8443/v2", properties={"healthPath": "/ping"})
    assert (s.host, s.port, s.properties["scheme"], s.properties["basePath"]) == (
        "api.example.com",
        8443,
        "https",
        "/v2",
    )
    body = airflow_connection("t.api", s, None)
    assert (body["conn_type"], body["host"], body["schema"]) == ("http", "https://api.example.com:8443/v2", "https")
    plain = spec("http", host="10.0.0.5", properties={"scheme": "http", "headers": {"Accept": "application/json"}})
    assert plain.port == 80
    assert json.loads(airflow_connection("t.api", plain, None)["extra"]) == {"Accept": "application/json"}
    assert error_paths("http", url="https://u:p@h/") == ["url"]
    assert error_paths("http", host="h", database="d") == ["database"]


def test_credentials_repr_hides_the_password() -> None:
    assert "pw-secret" not in repr(CREDS)
