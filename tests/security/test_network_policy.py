"""Issue 11, finding 2 (SSRF and port scanning): the network policy's decisions as pure functions (DNS
stubbed: no packet leaves this machine), and its enforcement on loopback only — the connection test refuses
before connecting, clients connect to the address that was checked, redirects elsewhere are not followed,
and a connection naming a refused address is refused when stored.

Every address outside 127.0.0.0/8 here is only ever DECIDED about, never connected to."""

from __future__ import annotations

import ipaddress
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import requests

from connections import build_spec
from connections.network import (
    ALLOWED_ENV,
    DENIED_ENV,
    LOOPBACK_NETWORKS,
    NetworkDenied,
    NetworkPolicy,
    build_policy,
    literal_address,
)
from connections.pinned import enforce_on_session, policy_client
from connections.testing import check_connection
from dag_factory.exceptions import DagFactoryError
from dag_factory.hooks.http_api import fetch_records
from tests.security.network_servers import RecordingServer
from tests.service.helpers import Api, expect_error

SERVICE_PORT, AIRFLOW_PORT = 8000, 8080
METADATA = "169.254.169.254"


def no_dns(host: str, port: int) -> list[Any]:
    raise AssertionError(f"{host} is a literal address: no DNS lookup expected")


def policy(allowed: str = "", denied: tuple[str, ...] = (), resolver: Any = no_dns, **env: str) -> NetworkPolicy:
    """A policy as the service or a worker builds it, with resolution stubbed (this host: 192.0.2.10)."""

    def resolve(host: str, port: int) -> list[Any]:
        if host == socket.gethostname():
            return [ipaddress.ip_address("192.0.2.10")]
        return list(resolver(host, port))

    return build_policy(allowed, denied, env=env, resolver=resolve)


def names(*pairs: tuple[str, str]) -> Any:
    """A stub resolver: host -> its addresses."""
    table = {host: [ipaddress.ip_address(a) for a in addresses.split(",")] for host, addresses in pairs}
    return lambda host, port: table[host]


def refused(p: NetworkPolicy, host: str, port: int = 443, resolver: Any = no_dns) -> str | None:
    try:
        p.check(host, port, resolver=resolver)
    except NetworkDenied as exc:
        return exc.reason
    return None


LOCAL = policy(LOOPBACK_NETWORKS, (f"127.0.0.1:{SERVICE_PORT}", f"127.0.0.1:{AIRFLOW_PORT}"))
EVERYTHING = policy("0.0.0.0/0,::/0")


# -- decisions -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "host",
    [
        METADATA,
        "169.254.170.2",  # ECS task metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "fe80::1",
        "[fe80::1%eth0]",
        "::ffff:169.254.169.254",  # IPv4-mapped IPv6
        "::ffff:a9fe:a9fe",
        "[::ffff:169.254.169.254]",
        "::169.254.169.254",  # IPv4-compatible
        "64:ff9b::a9fe:a9fe",  # NAT64
        "2002:a9fe:a9fe::1",  # 6to4
        "2852039166",  # decimal
        "0251.0376.0251.0376",  # octal
        "0xa9fea9fe",  # hexadecimal
        "0xa9.0xfe.0xa9.0xfe",
        "169.254.43518",  # a.b.c with a 16-bit last part
        "169.254.169.254.",  # the root domain's dot
    ],
)
def test_metadata_and_link_local_addresses_are_refused_in_every_spelling_even_when_all_is_allowed(host: str) -> None:
    reason = refused(EVERYTHING, host, 80)
    assert reason and ("link-local" in reason or "metadata" in reason), (host, reason)
    assert refused(LOCAL, host, 80) == reason


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("0.0.0.0", "unspecified"),
        ("0", "unspecified"),  # inet_aton: 0.0.0.0
        ("::", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
    ],
)
def test_unspecified_multicast_and_broadcast_are_never_allowed(host: str, kind: str) -> None:
    assert kind in (refused(EVERYTHING, host) or ""), host


def test_the_broadcast_address_of_an_allowed_network_is_refused() -> None:
    p = policy("10.0.0.0/8")
    assert refused(p, "10.1.2.3") is None
    assert "broadcast" in (refused(p, "10.255.255.255") or "")


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.1", "2130706433", "::1", "10.0.0.5", "172.16.0.1", "192.168.1.1", "100.64.0.1", "fc00::1"],
)
def test_private_and_loopback_addresses_need_the_operators_allowance(host: str) -> None:
    reason = refused(policy(), host)
    assert reason and ALLOWED_ENV in reason, (host, reason)
    assert (
        refused(policy("127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7"), host)
        is None
    )


def test_public_addresses_are_allowed() -> None:
    for host in ("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "::ffff:93.184.215.14"):
        assert refused(policy(), host) is None, host


@pytest.mark.parametrize("port", [SERVICE_PORT, AIRFLOW_PORT])
@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "127.1", "::1", "[::1]", "::ffff:127.0.0.1", "192.0.2.10"])
def test_the_services_and_airflows_own_ports_are_refused_even_with_loopback_allowed(host: str, port: int) -> None:
    """On any loopback address, and on this machine's own address (a server bound to 0.0.0.0 answers there)."""
    p = policy(LOOPBACK_NETWORKS + ",192.0.2.0/24", (f"127.0.0.1:{SERVICE_PORT}", f"localhost:{AIRFLOW_PORT}"),
               resolver=names(("localhost", "127.0.0.1,::1")))  # fmt: skip
    assert refused(p, host, port) == "an endpoint of the service or of Airflow itself"
    assert refused(p, host, 5432) is None  # the same host's other ports stay reachable


def test_log_servers_are_refused_on_every_host_and_airflows_api_from_its_environment() -> None:
    p = policy(AIRFLOW__API__BASE_URL="http://airflow-api:9091/", resolver=names(("airflow-api", "10.0.0.7")))
    for host in ("93.184.215.14", "127.0.0.1"):
        assert refused(p, host, 8793) == refused(p, host, 8794) == "an endpoint of the service or of Airflow itself"
    p = policy(
        "10.0.0.0/8", AIRFLOW__API__BASE_URL="http://airflow-api:9091/", resolver=names(("airflow-api", "10.0.0.7"))
    )
    assert refused(p, "10.0.0.7", 9091) == "an endpoint of the service or of Airflow itself"
    assert refused(p, "10.0.0.8", 9091) is None
    moved = policy(AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="9793")
    assert refused(moved, "93.184.215.14", 9793) and not refused(moved, "93.184.215.14", 8793)


def test_a_name_is_refused_if_any_of_its_addresses_is() -> None:
    resolver = names(
        ("mixed-metadata.test", f"93.184.215.14,{METADATA}"),
        ("mixed-private.test", "93.184.215.14,10.0.0.1"),
        ("mixed-v6.test", "2606:2800:21f:cb07:6820:80da:af6b:8b2c,::ffff:10.0.0.1"),
        ("public.test", "93.184.215.14,2606:2800:21f:cb07:6820:80da:af6b:8b2c"),
        ("own.test", "127.0.0.1"),
    )
    assert "metadata" in (refused(LOCAL, "mixed-metadata.test", resolver=resolver) or "")
    assert ALLOWED_ENV in (refused(LOCAL, "mixed-private.test", resolver=resolver) or "")
    assert ALLOWED_ENV in (refused(LOCAL, "mixed-v6.test", resolver=resolver) or "")
    assert (
        refused(LOCAL, "own.test", AIRFLOW_PORT, resolver=resolver) == "an endpoint of the service or of Airflow itself"
    )
    assert [str(a) for a in LOCAL.check("public.test", 443, resolver=resolver)] == [
        "93.184.215.14",
        "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
    ]


def test_literal_spellings_are_read_like_getaddrinfo_and_names_are_not_literals() -> None:
    assert str(literal_address("2852039166")) == METADATA
    assert str(literal_address("0251.0376.0251.0376")) == METADATA
    assert str(literal_address("[::1]")) == "::1"
    for name in ("example.com", "deadbeef", "1.2.3.4.example", "0x1g"):
        assert literal_address(name) is None, name


def test_without_dns_refusals_for_stored_connections() -> None:
    p = policy()
    assert ALLOWED_ENV in (p.refusal_without_dns("localhost", 5432) or "")
    assert ALLOWED_ENV in (p.refusal_without_dns("db.localhost", 5432) or "")
    assert "metadata" in (p.refusal_without_dns("metadata.google.internal", 80) or "")
    assert "metadata" in (p.refusal_without_dns("2852039166", 80) or "")
    assert p.refusal_without_dns("db.example.com", 5432) is None  # checked when resolved, not now
    assert LOCAL.refusal_without_dns("localhost", 5432) is None
    assert LOCAL.refusal_without_dns("localhost", AIRFLOW_PORT) == "an endpoint of the service or of Airflow itself"


def test_the_hint_names_the_policy_and_the_variable_but_no_address() -> None:
    resolver = names(("internal.test", "10.9.8.7"))
    with pytest.raises(NetworkDenied) as private:
        policy().check("internal.test", 5432, resolver=resolver)
    assert ALLOWED_ENV in private.value.hint and "network policy" in private.value.hint
    assert "10.9.8.7" not in str(private.value) + private.value.hint
    with pytest.raises(NetworkDenied) as own:
        LOCAL.check("127.0.0.1", AIRFLOW_PORT)
    assert DENIED_ENV in own.value.hint and "network policy" in own.value.hint


def test_bad_configuration_is_an_error_naming_the_variable() -> None:
    with pytest.raises(ValueError, match=ALLOWED_ENV):
        build_policy("10.0.0.0/33", [], env={})
    with pytest.raises(ValueError, match=DENIED_ENV):
        build_policy("", ["127.0.0.1"], env={})


# -- the connection test ---------------------------------------------------------------------------------
@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, int]]:
    """An open loopback port that counts nothing but whether anyone connected (accept would return)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock, int(sock.getsockname()[1])
    sock.close()


def connected_to(sock: socket.socket) -> bool:
    try:
        sock.accept()[0].close()
    except BlockingIOError:
        return False
    return True


@pytest.mark.parametrize("type_", ["postgres", "http", "s3"])
def test_a_refused_endpoint_fails_at_the_network_stage_before_any_connection(type_: str, listener: Any) -> None:
    sock, open_port = listener
    closed_port = open_port + 1 if open_port < 65535 else open_port - 1
    p = policy(LOOPBACK_NETWORKS, (f"127.0.0.1:{open_port}", f"127.0.0.1:{closed_port}"))
    results = []
    for port in (open_port, closed_port):
        result = check_connection(spec(type_, "127.0.0.1", port), None, timeout=5, policy=p)
        results.append(result)
        assert not result.connected and result.failed_stage == "network"
        assert [s.name for s in result.stages] == ["dns", "network"]
        assert DENIED_ENV in (result.hint or "") and "network policy" in (result.hint or "")
    assert not connected_to(sock)
    # Open and closed look the same: only the port number differs in the texts.
    texts = [(r.hint or "") + r.stages[-1].message for r in results]
    assert texts[0].replace(str(open_port), "P") == texts[1].replace(str(closed_port), "P")


def spec(type_: str, host: str, port: int) -> Any:
    if type_ == "s3":
        props = {"bucket": "b-1", "endpointUrl": f"http://{host}:{port}"}
        return build_spec("s3", host=None, port=None, database=None, url=None, properties=props)
    if type_ == "http":
        return build_spec("http", host=None, port=None, database=None, url=f"http://{host}:{port}", properties={})
    return build_spec("postgres", host=host, port=port, database="postgres", url=None, properties={})


def test_a_name_resolving_to_loopback_is_refused_when_loopback_is_not_allowed(listener: Any) -> None:
    sock, port = listener
    result = check_connection(spec("http", "localhost", port), None, timeout=5, policy=policy(resolver=no_dns))
    assert result.failed_stage == "network" and ALLOWED_ENV in (result.hint or "")
    assert not connected_to(sock)


def test_a_redirect_to_another_origin_is_not_followed_by_the_connection_test() -> None:
    target = RecordingServer()
    source = RecordingServer(redirects={"/health": target.url + "/api/v2/version", "/moved": "/health-final"})
    try:
        p = policy(LOOPBACK_NETWORKS)
        props = {"healthPath": "/health"}
        result = check_connection(
            build_spec("http", host=None, port=None, database=None, url=source.url, properties=props), None, policy=p
        )
        assert result.failed_stage == "authentication" and "does not follow" in (result.hint or "")
        assert target.seen == [] and str(target.port) not in str(result)
        same = {"healthPath": "/moved"}
        ok = check_connection(
            build_spec("http", host=None, port=None, database=None, url=source.url, properties=same), None, policy=p
        )
        assert ok.connected and [s.path for s in source.seen][-2:] == ["/moved", "/health-final"]
    finally:
        source.stop()
        target.stop()


# -- clients pinned to the checked address ---------------------------------------------------------------
@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`rebind.test` resolves, through the policy's resolver, to 127.0.0.1; any other lookup of a name
    (a second one, by the HTTP library or the driver) fails — as a rebinding DNS would answer elsewhere."""
    lookups: list[str] = []
    real = socket.getaddrinfo

    def policy_resolver(host: str, port: int) -> list[Any]:
        if host == socket.gethostname():  # the policy asks once for this machine's own addresses
            return []
        lookups.append(host)
        assert host == "rebind.test"
        return [ipaddress.ip_address("127.0.0.1")]

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if literal_address(str(host)) is None:
            raise socket.gaierror(socket.EAI_NONAME, f"second lookup of {host}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr("connections.network.system_resolver", policy_resolver)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


def test_http_clients_connect_to_the_checked_address_and_keep_the_host_name(rebinding: list[str]) -> None:
    server = RecordingServer()
    try:
        allow = policy(LOOPBACK_NETWORKS)
        with policy_client(allow) as client:
            assert client.get(f"http://rebind.test:{server.port}/a").status_code == 200
        session = enforce_on_session(requests.Session(), allow)
        assert session.get(f"http://rebind.test:{server.port}/b").status_code == 200
        assert rebinding == ["rebind.test", "rebind.test"] and [s.path for s in server.seen] == ["/a", "/b"]
        own = policy(LOOPBACK_NETWORKS, (f"127.0.0.1:{server.port}",))
        with policy_client(own) as client, pytest.raises(httpx.ConnectError, match="network policy"):
            client.get(f"http://rebind.test:{server.port}/c")
        with pytest.raises(requests.ConnectionError, match="network policy"):
            enforce_on_session(requests.Session(), own).get(f"http://rebind.test:{server.port}/d")
        assert [s.path for s in server.seen] == ["/a", "/b"]
    finally:
        server.stop()


def test_the_postgres_hook_gives_libpq_the_checked_address(
    rebinding: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dag_factory.hooks.postgres import PostgresHook

    conn_id = "sec_rebind_" + uuid.uuid4().hex[:6]
    uri = "postgresql://postgres@rebind.test:5432/postgres"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", uri)
    monkeypatch.setenv(ALLOWED_ENV, LOOPBACK_NETWORKS)
    with PostgresHook(conn_id).get_conn() as conn:  # `rebind.test` exists in no DNS: only hostaddr reaches it
        assert conn.execute("SELECT 1").fetchone() == (1,)
    monkeypatch.setenv(ALLOWED_ENV, "")
    with pytest.raises(DagFactoryError, match="network policy"):
        PostgresHook(conn_id).get_conn()
    with pytest.raises(psycopg.OperationalError):  # and without the checked address, the name fails
        psycopg.connect("host=rebind.test port=5432 dbname=postgres user=postgres connect_timeout=2")


def test_an_http_source_follows_no_redirect_to_another_origin() -> None:
    target = RecordingServer()
    source = RecordingServer(redirects={"/items": target.url + "/api/v2/version"})
    try:
        session = enforce_on_session(requests.Session(), policy(LOOPBACK_NETWORKS))
        with pytest.raises(DagFactoryError, match="another origin"):
            fetch_records(session, source.url, "/items", records_path="items")
        with pytest.raises(DagFactoryError, match="leaves the connection's host"):
            fetch_records(session, source.url, target.url + "/api/v2/version")
        assert target.seen == []
    finally:
        source.stop()
        target.stop()


def test_a_webhook_to_a_refused_endpoint_is_not_delivered(monkeypatch: pytest.MonkeyPatch) -> None:
    from dag_factory.callbacks import post_summary

    hook = RecordingServer(redirects={"/moved": "/elsewhere"})
    try:
        monkeypatch.setenv(ALLOWED_ENV, LOOPBACK_NETWORKS)
        monkeypatch.setenv(DENIED_ENV, f"127.0.0.1:{hook.port}")
        post_summary({"dag_id": "a.x"}, url=f"{hook.url}/failed")
        monkeypatch.setenv(ALLOWED_ENV, "")
        monkeypatch.setenv(DENIED_ENV, "")
        post_summary({"dag_id": "a.x"}, url=f"{hook.url}/failed")
        assert hook.seen == []
        monkeypatch.setenv(ALLOWED_ENV, LOOPBACK_NETWORKS)
        post_summary({"dag_id": "a.x"}, url=f"{hook.url}/moved")
        assert [s.path for s in hook.seen] == ["/moved"]  # delivered there, the redirect not followed
    finally:
        hook.stop()


# -- stored connections ------------------------------------------------------------------------------------
@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/svc.db"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"host": METADATA, "port": 80}, "host"),
        ({"host": "2852039166", "port": 80}, "host"),
        ({"host": "::ffff:169.254.169.254", "port": 80}, "host"),
        ({"host": "127.0.0.1", "port": SERVICE_PORT}, "host"),  # the service itself (loopback is allowed here)
        ({"host": "localhost", "port": SERVICE_PORT}, "host"),
        ({"url": "jdbc:postgresql://0251.0376.0251.0376:5432/db"}, "url"),
    ],
)
def test_a_connection_to_a_refused_address_is_not_stored(api: Api, body: dict[str, Any], path: str) -> None:
    fields = {"name": "n" + uuid.uuid4().hex[:8], "type": "jdbc" if "url" in body else "postgres", **body}
    fields |= {} if "url" in body else {"database": "db"}
    fields["credentials"] = {"username": "u", "password": "p"}
    error = expect_error(api.post("/v1/pipelines/connections", json=fields), 400, "validation_error", path=path)
    assert "network policy" in error["message"]


def test_http_and_s3_urls_to_refused_addresses_are_not_stored(api: Api) -> None:
    http = {"name": "h" + uuid.uuid4().hex[:8], "type": "http", "url": "http://[::ffff:a9fe:a9fe]/latest/meta-data"}
    expect_error(api.post("/v1/pipelines/connections", json=http), 400, "validation_error", path="url")
    s3 = {"name": "s" + uuid.uuid4().hex[:8], "type": "s3", "credentials": {"username": "k", "password": "s"},
          "properties": {"bucket": "b-1", "endpointUrl": "http://169.254.169.254"}}  # fmt: skip
    expect_error(api.post("/v1/pipelines/connections", json=s3), 400, "validation_error", path="properties.endpointUrl")


def test_headers_that_steer_the_http_provider_are_refused(api: Api) -> None:
    for name in ("proxies", "proxy", "srv_lookup", "allow_redirects", "trust_env"):
        body = {"name": "h" + uuid.uuid4().hex[:8], "type": "http", "url": "https://api.example.com",
                "properties": {"headers": {name: "http://169.254.169.254"}}}  # fmt: skip
        expect_error(api.post("/v1/pipelines/connections", json=body), 400, "validation_error")


def test_the_stack_gives_airflow_the_policy_with_its_own_endpoints(tmp_path: Path, monkeypatch: Any) -> None:
    """What `make up` and the e2e harness start: every Airflow process gets the allowed networks and the
    endpoints no task may call (its api-server, the log servers, the service)."""
    from service.stack import AirflowStack

    monkeypatch.setenv(DENIED_ENV, "db.internal:5432")
    stack = AirflowStack(
        tmp_path, 18080, tmp_path / "dags", allowed_networks=LOOPBACK_NETWORKS, denied_endpoints=("127.0.0.1:18000",)
    )
    env = stack.network_policy_env()
    assert env[ALLOWED_ENV] == LOOPBACK_NETWORKS
    assert set(env[DENIED_ENV].split(",")) == {
        "db.internal:5432", "127.0.0.1:18080", "*:8793", "*:8794", "127.0.0.1:18000"
    }  # fmt: skip
    worker = policy(env[ALLOWED_ENV], tuple(env[DENIED_ENV].split(",")), resolver=names(("db.internal", "10.0.0.9")))
    for port in (18080, 18000, 8793, 8794):
        assert refused(worker, "127.0.0.1", port) == "an endpoint of the service or of Airflow itself"
    assert refused(worker, "127.0.0.1", 5432) is None


def test_the_distributed_profile_s_workers_log_ports_are_their_own_and_denied(tmp_path: Path) -> None:
    from service.stack import AirflowStack, Distributed

    workers = ("worker-1", "worker-2", "worker-3")
    stack = AirflowStack(
        tmp_path,
        18080,
        tmp_path / "dags",
        "postgresql+psycopg2://postgres@127.0.0.1:5432/airflow",
        allowed_networks=LOOPBACK_NETWORKS,
        distributed=Distributed(broker_url="redis://127.0.0.1:6379/0", workers=workers),
    )
    ports = [stack._component_env(w, {})["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] for w in workers]
    assert ports == ["8793", "8795", "8796"]  # 8794 is the triggerer's
    assert stack.env()["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    denied = set(stack.network_policy_env()[DENIED_ENV].split(","))
    assert {"*:8793", "*:8794", "*:8795", "*:8796"} <= denied


def test_the_distributed_profile_denies_its_replicas_bucket_broker_and_airflow_to_tenants(tmp_path: Path) -> None:
    from service.distributed import Profile

    profile = Profile(tmp_path, service_ports=(18000, 18001), s3_port=19000, airflow_port=18080,
                      broker_url="redis://127.0.0.1:16379/0")  # fmt: skip
    replica = profile.service_env(1)["PIPELINE_DENIED_ENDPOINTS"].split(",")
    policy = build_policy("127.0.0.0/8", replica)
    for port in (18000, 18001, 19000, 18080, 16379):
        assert refused(policy, "127.0.0.1", port) == "an endpoint of the service or of Airflow itself"
    assert refused(policy, "127.0.0.1", 5432) is None  # the tour's databases stay reachable
    assert set(profile.airflow().network_policy_env()[DENIED_ENV].split(",")) >= set(replica)
