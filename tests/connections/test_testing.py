"""The staged connection test against real servers: the local PostgreSQL (trust auth), a throwaway
scram-sha-256 cluster (wrong passwords), moto's S3, a small HTTP API, and a server that never answers."""

from __future__ import annotations

import boto3
import pytest

from connections import ConnectionSpec, Credentials, build_spec, check_connection
from connections.testing import TestResult
from tests.connections.conftest import SCRAM_PASSWORD
from tests.connections.servers import HttpApi, MotoServer, ScramCluster, SilentServer, free_port
from tests.pg import PG_ADMIN_URL

LABEL = "the secret PIPELINE_SECRET_X"
POSTGRES = Credentials("postgres", "any")
PG_HOST, PG_PORT = "127.0.0.1", int(PG_ADMIN_URL.rsplit(":", 1)[1].split("/")[0])


def pg(port: int = PG_PORT, database: str = "postgres", host: str = PG_HOST, **properties: object) -> ConnectionSpec:
    return build_spec("postgres", host=host, port=port, database=database, url=None, properties=properties)


def run(spec: ConnectionSpec, creds: Credentials | None = POSTGRES, **kw: object) -> TestResult:
    result = check_connection(spec, creds, credentials_label=LABEL, **kw)  # type: ignore[arg-type]
    assert [s.ok for s in result.stages].count(False) == (0 if result.connected else 1)
    return result


def names(result: TestResult) -> list[str]:
    return [s.name for s in result.stages]


def test_postgres_success_reports_version_schemas_and_tables() -> None:
    result = run(pg())
    assert result.connected and result.failed_stage is None and result.hint is None
    assert names(result) == ["dns", "network", "tcp", "authentication", "privilege"]
    assert result.version and result.version.startswith("PostgreSQL ")
    assert "public" in result.details["schemas"] and isinstance(result.details["tables"], int)
    assert result.latency_ms >= 0 and all(s.ms >= 0 for s in result.stages)


def test_closed_port_fails_at_tcp() -> None:
    port = free_port()
    result = run(pg(port=port))
    assert (result.connected, result.failed_stage) == (False, "tcp")
    assert result.hint == f"TCP connect to 127.0.0.1:{port} refused: is the server running and is the port right?"


def test_unknown_host_fails_at_dns() -> None:
    result = run(pg(host="no-such-db.invalid"))
    assert result.failed_stage == "dns" and names(result) == ["dns"]
    assert result.hint and result.hint.startswith("DNS lookup of 'no-such-db.invalid' failed")


def test_missing_database_fails_at_authentication() -> None:
    result = run(pg(database="no_such_database_x"))
    assert result.failed_stage == "authentication"
    assert (
        result.hint == "database 'no_such_database_x' does not exist on 127.0.0.1:5432: check the connection's database"
    )


def test_tls_required_but_the_server_has_none_fails_at_tls(scram_cluster: ScramCluster) -> None:
    result = run(pg(port=scram_cluster.port, sslMode="require"), Credentials("postgres", SCRAM_PASSWORD))
    assert result.failed_stage == "tls" and names(result) == ["dns", "network", "tcp", "tls"]
    assert result.hint == (
        f"the server at 127.0.0.1:{scram_cluster.port} does not accept TLS, but properties.sslMode is 'require': "
        "enable ssl on the server, or set properties.sslMode to 'prefer' or 'disable'"
    )


def test_wrong_password_fails_at_authentication_and_is_never_echoed(scram_cluster: ScramCluster) -> None:
    wrong = "wrong-pw-Lk2-planted"
    result = run(pg(port=scram_cluster.port), Credentials("postgres", wrong))
    assert result.failed_stage == "authentication"
    assert result.hint == f"password authentication failed for user 'postgres': check {LABEL}"
    assert wrong not in repr(result)
    ok = run(pg(port=scram_cluster.port), Credentials("postgres", SCRAM_PASSWORD))
    assert ok.connected and SCRAM_PASSWORD not in repr(ok)


def test_no_password_for_a_scram_server(scram_cluster: ScramCluster) -> None:
    result = run(pg(port=scram_cluster.port), Credentials("postgres", None))
    assert result.failed_stage == "authentication"
    assert result.hint == f"the server wants a password for user 'postgres' and none was given: check {LABEL}"


def test_a_silent_server_hits_the_hard_timeout() -> None:
    silent = SilentServer()
    try:
        result = run(pg(port=silent.port), timeout=1.5)
    finally:
        silent.stop()
    assert result.failed_stage == "authentication" and not result.connected
    assert result.stages[-1].message == "no answer within the test's 1.5 s limit"
    assert result.hint == (
        f"127.0.0.1:{silent.port} accepted the connection but the authentication stage did not finish within "
        "1.5 s: is it the right kind of server, and is it overloaded?"
    )
    assert result.latency_ms < 3000


@pytest.fixture(scope="module")
def bucket(moto: MotoServer) -> str:
    s3 = boto3.client(
        "s3", endpoint_url=moto.url, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    s3.create_bucket(Bucket="raw-data")
    for key in ("in/a.csv", "in/b.csv", "other/c.csv"):
        s3.put_object(Bucket="raw-data", Key=key, Body=b"x")
    return "raw-data"


def s3(moto: MotoServer, bucket: str, **properties: object) -> ConnectionSpec:
    props = {"bucket": bucket, "endpointUrl": moto.url, **properties}
    return build_spec("s3", host=None, port=None, database=None, url=None, properties=props)


def test_s3_success_counts_the_objects_under_the_prefix(moto: MotoServer, bucket: str) -> None:
    result = run(s3(moto, bucket, prefix="in/"), Credentials("AKIATEST", "aws-secret-planted"))
    assert result.connected, result
    assert names(result) == ["dns", "network", "tcp", "authentication", "privilege"]
    assert result.details == {"bucket": "raw-data", "prefix": "in/", "objects": 2, "moreObjects": False}


def test_s3_missing_bucket_fails_at_authentication(moto: MotoServer, bucket: str) -> None:
    result = run(s3(moto, "no-such-bucket"), Credentials("AKIATEST", "s"))
    assert result.failed_stage == "authentication"
    assert result.hint == (
        f"bucket 'no-such-bucket' does not exist at {moto.url}: check properties.bucket and properties.region"
    )


def test_s3_closed_endpoint_fails_at_tcp() -> None:
    port = free_port()
    spec = build_spec(
        "s3", host=None, port=None, database=None, url=None,
        properties={"bucket": "raw-data", "endpointUrl": f"http://127.0.0.1:{port}"},
    )  # fmt: skip
    assert run(spec, Credentials("k", "s")).failed_stage == "tcp"


def http(api: HttpApi, path: str) -> ConnectionSpec:
    return build_spec(
        "http", host=None, port=None, database=None, url=f"http://127.0.0.1:{api.port}", properties={"healthPath": path}
    )


def test_http_health_success(http_api: HttpApi) -> None:
    result = run(http(http_api, "/health"), None)
    # A foreign server's Server header and status code are not relayed (issue 11, finding 2).
    assert result.connected and result.version is None
    assert result.details == {"url": f"http://127.0.0.1:{http_api.port}/health"}


def test_http_auth(http_api: HttpApi) -> None:
    assert run(http(http_api, "/private"), Credentials("api", "api-pw")).connected
    bad = run(http(http_api, "/private"), Credentials("api", "nope"))
    assert bad.failed_stage == "authentication"
    assert bad.hint == f"the endpoint refused the request: check {LABEL}"
    assert "401" not in str(bad).replace(str(http_api.port), "<port>")  # the port itself may contain 401
    anonymous = run(http(http_api, "/private"), None)
    assert anonymous.hint and anonymous.hint.endswith(
        "the endpoint wants credentials: set credentialSecretRef or credentials"
    )


def test_http_unhealthy_and_missing_paths_fail_at_privilege(http_api: HttpApi) -> None:
    broken = run(http(http_api, "/broken"), None)
    missing = run(http(http_api, "/nope"), None)
    for failed in (broken, missing):
        assert failed.failed_stage == "privilege" and failed.hint and "check properties.healthPath" in failed.hint
        assert "500" not in str(failed) and "404" not in str(failed)


def test_https_against_a_plain_port_fails_at_tls(http_api: HttpApi) -> None:
    spec = build_spec("http", host="127.0.0.1", port=http_api.port, database=None, url=None, properties={})
    result = run(spec, None)
    assert result.failed_stage == "tls"
    assert result.hint and result.hint.startswith(f"TLS handshake with 127.0.0.1:{http_api.port} failed")
