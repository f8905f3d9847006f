"""Staged connection test: DNS → network policy → TCP connect → TLS (when asked for) → authentication →
privilege probe.

Each stage is timed and either passes or stops the test with a `hint` a person can act on ("TCP connect to
db:5433 refused: is the server running and is the port right?"). The whole test has one hard deadline; a
stage that is still running when it passes is reported as the failed stage. The test runs in the calling
process with the real credentials (never a masked value) and never puts them in a message: driver messages
are scrubbed of the password before they are shown.

A tenant names the host, so the test must not become a probe of the service's own network: every resolved
address passes the network policy (connections.network) before any packet is sent — a refused host fails at
the `network` stage, so open, closed and filtered ports of a refused host look the same — and later stages
connect only to the checked addresses. What a foreign server says is not echoed back: no status code beyond
OK / failed, no `Server` header, no banner, no redirect followed to another origin.

Drivers: psycopg for the PostgreSQL family, boto3 for s3, httpx for http. No service or airflow imports.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from connections.network import NetworkDenied, NetworkPolicy, current_policy, ip_address_of
from connections.types import SQL_TYPES, ConnectionSpec, Credentials, http_base_url, s3_endpoint

DEFAULT_TIMEOUT_SECONDS = 10.0
_TLS_MODES = ("require", "verify-ca", "verify-full")


@dataclass
class Stage:
    name: str
    ok: bool
    ms: int
    message: str


@dataclass
class TestResult:
    connected: bool
    latency_ms: int
    stages: list[Stage]
    version: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    failed_stage: str | None = None
    hint: str | None = None

    __test__ = False  # not a pytest class


class StageFailed(Exception):
    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.message = message
        self.hint = hint


class _Run:
    """The state of one test, shared between the worker thread and the caller that enforces the deadline."""

    def __init__(self, timeout: float, secrets: list[str], policy: NetworkPolicy | None = None):
        self.policy = policy or current_policy()
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.timeout = timeout
        # Shorter values would turn every message into asterisks without protecting anything.
        self.secrets = [s for s in secrets if len(s) >= 4]
        self.stages: list[Stage] = []
        self.current: str | None = None
        self.lock = threading.Lock()
        self.version: str | None = None
        self.details: dict[str, Any] = {}

    def remaining(self, cap: float | None = None) -> float:
        left = max(0.05, self.deadline - time.monotonic())
        return min(left, cap) if cap else left

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def stage(self, name: str, work: Callable[[], str]) -> None:
        with self.lock:
            self.current = name
        t0 = time.monotonic()
        try:
            message = work()
        except StageFailed as exc:
            self._record(Stage(name, False, _ms(t0), self.scrub(exc.message)))
            raise StageFailed(self.scrub(exc.message), self.scrub(exc.hint)) from None
        self._record(Stage(name, True, _ms(t0), self.scrub(message)))

    def _record(self, stage: Stage) -> None:
        with self.lock:
            self.stages.append(stage)
            self.current = None


def _ms(t0: float) -> int:
    return int(round((time.monotonic() - t0) * 1000))


def check_connection(
    spec: ConnectionSpec,
    creds: Credentials | None,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    credentials_label: str = "the connection's credentials",
    policy: NetworkPolicy | None = None,
) -> TestResult:
    """Run the staged test within `timeout` seconds (the connection's own connectionTimeout, if smaller,
    bounds each network wait). `credentials_label` says where the credentials come from, for hints;
    `policy` which addresses may be reached (default: the environment's, connections.network)."""
    run = _Run(timeout, [creds.password or ""] if creds else [], policy)
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            _STAGES[_family(spec.type)](run, spec, creds, credentials_label)
        except StageFailed as exc:
            outcome["failed"] = exc
        except Exception as exc:  # noqa: BLE001 - a driver surprise is a failed test, not a 500
            outcome["failed"] = StageFailed(
                f"unexpected {type(exc).__name__}: {run.scrub(str(exc))[:300]}",
                "the test stopped on an unexpected error; the message above is the driver's",
            )

    thread = threading.Thread(target=work, name=f"connection-test-{spec.host}", daemon=True)
    thread.start()
    thread.join(timeout)
    with run.lock:
        stages = list(run.stages)
        current = run.current
    latency = _ms(run.started)
    if thread.is_alive():
        # The worker may still hang in a driver call; it is a daemon and its result is dropped.
        name = current or "dns"
        message = f"no answer within the test's {timeout:g} s limit"
        stages.append(Stage(name, False, latency - sum(s.ms for s in stages), message))
        hint = _timeout_hint(name, spec, timeout)
        return TestResult(False, latency, stages, run.version, run.details, name, hint)
    failed = outcome.get("failed")
    if failed is not None:
        return TestResult(False, latency, stages, run.version, run.details, stages[-1].name, failed.hint)
    return TestResult(True, latency, stages, run.version, run.details)


def _timeout_hint(stage: str, spec: ConnectionSpec, timeout: float) -> str:
    where = f"{spec.host}:{spec.port}"
    if stage == "dns":
        return f"DNS lookup of '{spec.host}' got no answer within {timeout:g} s: check the service host's DNS servers"
    if stage == "tcp":
        return f"TCP connect to {where} got no answer within {timeout:g} s: is a firewall dropping packets?"
    return (
        f"{where} accepted the connection but the {stage} stage did not finish within {timeout:g} s: "
        "is it the right kind of server, and is it overloaded?"
    )


def _family(type_: str) -> str:
    return "postgres" if type_ in SQL_TYPES else type_


# -- network stages shared by every type -------------------------------------------------------------
def _dns(run: _Run, host: str, port: int) -> list[tuple[Any, ...]]:
    found: list[tuple[Any, ...]] = []

    def work() -> str:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise StageFailed(
                f"cannot resolve '{host}': {exc.strerror}",
                f"DNS lookup of '{host}' failed ({exc.strerror}): check the host name",
            ) from None
        found.extend(infos)
        count = len({info[4][0] for info in infos})
        return f"'{host}' resolved ({count} address{'es' if count > 1 else ''})"

    run.stage("dns", work)
    run.stage("network", lambda: _allowed(run, host, port, found))
    return found


def _allowed(run: _Run, host: str, port: int, infos: list[tuple[Any, ...]]) -> str:
    """Every resolved address must pass the policy (a name with one refused address could be answered with
    that one next time); refused before any connection, so the answer says nothing of the port."""
    addresses = list(dict.fromkeys(ip_address_of(info[4][0]) for info in infos))
    try:
        run.policy.check(host, port, resolver=lambda _h, _p: addresses)
    except NetworkDenied as exc:
        raise StageFailed(str(exc), exc.hint) from None
    return f"{host}:{port} is allowed by the network policy"


def _tcp(run: _Run, host: str, port: int, infos: list[tuple[Any, ...]], cap: float | None) -> socket.socket:
    sockets: list[socket.socket] = []

    def work() -> str:
        errors: list[OSError] = []
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            sock.settimeout(run.remaining(cap))
            try:
                sock.connect(address)
            except OSError as exc:
                sock.close()
                errors.append(exc)
                continue
            sockets.append(sock)
            return f"connected to {host}:{port}"
        first = errors[0] if errors else OSError("no address")
        where = f"{host}:{port}"
        if isinstance(first, ConnectionRefusedError):
            raise StageFailed(
                f"connection to {where} refused",
                f"TCP connect to {where} refused: is the server running and is the port right?",
            )
        if isinstance(first, TimeoutError):
            raise StageFailed(
                f"connection to {where} timed out",
                f"TCP connect to {where} timed out: is a firewall dropping packets, or is the host wrong?",
            )
        reason = first.strerror or type(first).__name__
        raise StageFailed(
            f"connection to {where} failed: {reason}",
            f"TCP connect to {where} failed ({reason}): check the host, the port and the network route",
        )

    run.stage("tcp", work)
    return sockets[0]


def _tls_context(verify: bool, check_hostname: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = check_hostname
    if not verify:
        context.verify_mode = ssl.CERT_NONE
    return context


def _handshake(run: _Run, sock: socket.socket, host: str, port: int, context: ssl.SSLContext, what: str) -> str:
    try:
        with context.wrap_socket(sock, server_hostname=host) as tls:
            cipher = tls.cipher()
            return f"{tls.version()} ({cipher[0] if cipher else 'unknown cipher'})"
    except ssl.SSLCertVerificationError as exc:
        raise StageFailed(
            f"the certificate of {host}:{port} is not trusted: {exc.verify_message}",
            f"TLS certificate check failed for {host}:{port} ({exc.verify_message}): "
            f"use a certificate signed by a trusted CA, or relax {what}",
        ) from None
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        raise StageFailed(
            f"TLS handshake with {host}:{port} failed: {reason}",
            f"TLS handshake with {host}:{port} failed ({reason}): is this a TLS port? check {what}",
        ) from None


# -- PostgreSQL (postgres, jdbc, sql) ----------------------------------------------------------------
def _postgres(run: _Run, spec: ConnectionSpec, creds: Credentials | None, label: str) -> None:
    cap = spec.timeout_seconds
    infos = _dns(run, spec.host, spec.port)
    sock = _tcp(run, spec.host, spec.port, infos, cap)
    checked = str(ip_address_of(sock.getpeername()[0]))  # libpq's hostaddr: no second DNS lookup
    ssl_mode = spec.properties.get("sslMode")
    try:
        if ssl_mode in _TLS_MODES:
            run.stage("tls", lambda: _postgres_tls(run, sock, spec, ssl_mode, cap))
    finally:
        sock.close()
    _postgres_login_and_probe(run, spec, creds, label, cap, checked)


def _postgres_tls(run: _Run, sock: socket.socket, spec: ConnectionSpec, mode: str, cap: float | None) -> str:
    """PostgreSQL's SSLRequest: the server answers one byte, 'S' (TLS follows) or 'N' (no TLS here)."""
    where = f"{spec.host}:{spec.port}"
    sock.settimeout(run.remaining(cap))
    try:
        sock.sendall(struct.pack("!ii", 8, 80877103))
        answer = sock.recv(1)
    except OSError as exc:
        raise StageFailed(
            f"no answer to the TLS request from {where}: {exc}",
            f"{where} did not answer like a PostgreSQL server: is the port right?",
        ) from None
    if answer == b"N":
        raise StageFailed(
            f"the server at {where} does not support TLS",
            f"the server at {where} does not accept TLS, but properties.sslMode is '{mode}': "
            "enable ssl on the server, or set properties.sslMode to 'prefer' or 'disable'",
        )
    if answer != b"S":
        raise StageFailed(
            f"unexpected answer to the TLS request from {where}",
            f"{where} did not answer like a PostgreSQL server: is the port right?",
        )
    context = _tls_context(verify=mode != "require", check_hostname=mode == "verify-full")
    return _handshake(run, sock, spec.host, spec.port, context, "properties.sslMode")


# libpq quotes the bytes a server that is not PostgreSQL sent back: a banner, which a test must not relay.
_NOT_POSTGRES = ("invalid response to ssl negotiation", "expected authentication request", "invalid message")


def _server_message(exc: Exception) -> str:
    text = str(exc).strip()
    if any(marker in text.lower() for marker in _NOT_POSTGRES):
        return "the server did not answer like a PostgreSQL server"
    for marker in ("FATAL:  ", "FATAL: ", "ERROR:  "):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    return text.splitlines()[0] if text else type(exc).__name__


def _login_hint(message: str, spec: ConnectionSpec, user: str, label: str) -> str:
    low = message.lower()
    if "password authentication failed" in low:
        return f"password authentication failed for user '{user}': check {label}"
    if "no password supplied" in low or "fe_sendauth" in low:
        return f"the server wants a password for user '{user}' and none was given: check {label}"
    if "role" in low and "does not exist" in low:
        return f"user '{user}' does not exist on {spec.host}:{spec.port}: check {label}"
    if "database" in low and "does not exist" in low:
        return f"database '{spec.database}' does not exist on {spec.host}:{spec.port}: check the connection's database"
    if "pg_hba.conf" in low:
        return (
            f"the server's pg_hba.conf does not let user '{user}' reach database '{spec.database}' from here "
            "(or not without TLS): ask its administrator, or check properties.sslMode"
        )
    if "permission denied" in low:
        return f"user '{user}' may not connect to database '{spec.database}': GRANT CONNECT ON DATABASE to it"
    if "ssl" in low:
        return f"the server refused the TLS setting: check properties.sslMode ({message})"
    if "timeout" in low or "timed out" in low:
        return f"the server did not complete the login in time: is {spec.host}:{spec.port} overloaded?"
    return f"login failed: {message}"


def _postgres_login_and_probe(
    run: _Run, spec: ConnectionSpec, creds: Credentials | None, label: str, cap: float | None, hostaddr: str
) -> None:
    import psycopg

    user = creds.username if creds else ""
    holder: list[Any] = []

    def login() -> str:
        kwargs: dict[str, Any] = {
            "host": spec.host,  # still the name: TLS verify-full checks the certificate against it
            "hostaddr": hostaddr,
            "port": spec.port,
            "dbname": spec.database,
            "user": user,
            "password": (creds.password if creds else None) or None,
            "connect_timeout": max(2, int(run.remaining(cap) + 0.999)),
            "application_name": spec.properties.get("applicationName") or "pipeline-service connection test",
            "autocommit": True,
        }
        if spec.properties.get("sslMode"):
            kwargs["sslmode"] = spec.properties["sslMode"]
        try:
            holder.append(psycopg.connect(**{k: v for k, v in kwargs.items() if v is not None}))
        except psycopg.Error as exc:
            message = run.scrub(_server_message(exc))
            raise StageFailed(message, _login_hint(message, spec, user, label)) from None
        return f"logged in as '{user}' to database '{spec.database}'"

    run.stage("authentication", login)
    conn = holder[0]
    try:
        run.stage("privilege", lambda: _postgres_probe(run, conn, spec, user, cap))
    finally:
        conn.close()


def _postgres_probe(run: _Run, conn: Any, spec: ConnectionSpec, user: str, cap: float | None) -> str:
    import psycopg

    try:
        conn.execute(f"SET statement_timeout = {int(run.remaining(cap) * 1000)}")
        version = conn.execute("SHOW server_version").fetchone()[0]
        schemas = [
            row[0]
            for row in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE has_schema_privilege(oid, 'USAGE') "
                "AND nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' ORDER BY 1"
            )
        ]
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()[0]
    except psycopg.Error as exc:
        message = _server_message(exc)
        raise StageFailed(
            message,
            f"user '{user}' is logged in but cannot list schemas and tables ({message}): "
            "grant it USAGE on the schemas the pipelines use",
        ) from None
    run.version = f"PostgreSQL {str(version).split()[0]}"
    run.details = {"schemas": schemas, "tables": int(tables)}
    if not schemas:
        return f"user '{user}' may use no schema in database '{spec.database}'"
    return f"{len(schemas)} schema(s) and {tables} table(s) visible to '{user}'"


# -- S3 --------------------------------------------------------------------------------------------------
def _s3(run: _Run, spec: ConnectionSpec, creds: Credentials | None, label: str) -> None:
    props = spec.properties
    endpoint = s3_endpoint(props)
    cap = spec.timeout_seconds
    https = urlsplit(endpoint).scheme == "https"
    infos = _dns(run, spec.host, spec.port)
    sock = _tcp(run, spec.host, spec.port, infos, cap)
    try:
        if https:
            context = _tls_context(verify=props.get("verifyTls", True), check_hostname=props.get("verifyTls", True))
            sock.settimeout(run.remaining(cap))
            run.stage("tls", lambda: _handshake(run, sock, spec.host, spec.port, context, "properties.verifyTls"))
    finally:
        sock.close()
    client = _s3_client(run, spec, creds, endpoint, cap)
    bucket = props["bucket"]
    run.stage("authentication", lambda: _s3_head_bucket(client, bucket, endpoint, label, run))
    run.stage("privilege", lambda: _s3_list(client, bucket, props.get("prefix", ""), run))


def _s3_client(run: _Run, spec: ConnectionSpec, creds: Credentials | None, endpoint: str, cap: float | None) -> Any:
    import boto3
    from botocore.config import Config

    from connections.pinned import enforce_on_boto_client

    wait = run.remaining(cap)
    config = Config(connect_timeout=wait, read_timeout=wait, retries={"max_attempts": 1})
    client = boto3.session.Session().client(
        "s3",
        region_name=spec.properties.get("region", "us-east-1"),
        endpoint_url=spec.properties.get("endpointUrl") or endpoint,
        aws_access_key_id=creds.username if creds else None,
        aws_secret_access_key=creds.password if creds else None,
        verify=spec.properties.get("verifyTls", True),
        config=config,
    )
    # Its requests go through the policy's client: botocore would resolve the endpoint again.
    return enforce_on_boto_client(client, run.policy, verify=spec.properties.get("verifyTls", True), timeout=wait)


def _s3_error(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", type(exc).__name__))


def _s3_head_bucket(client: Any, bucket: str, endpoint: str, label: str, run: _Run) -> str:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        client.head_bucket(Bucket=bucket)
    except NoCredentialsError:
        raise StageFailed("no credentials", f"no access key is set for this connection: check {label}") from None
    except ClientError as exc:
        code = _s3_error(exc)
        if code in ("404", "NoSuchBucket"):
            raise StageFailed(
                f"bucket '{bucket}' not found",
                f"bucket '{bucket}' does not exist at {endpoint}: check properties.bucket and properties.region",
            ) from None
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId"):
            raise StageFailed(
                f"the S3 endpoint rejected the access key ({code})",
                f"the access key id or secret access key is wrong ({code}): check {label}",
            ) from None
        if code in ("403", "AccessDenied"):
            raise StageFailed(
                f"access to bucket '{bucket}' denied",
                f"access to bucket '{bucket}' was denied: check {label} and that the key may use the bucket "
                "(s3:ListBucket)",
            ) from None
        if code == "301" or code == "PermanentRedirect":
            raise StageFailed(
                f"bucket '{bucket}' is in another region",
                f"bucket '{bucket}' lives in another region: set properties.region to the bucket's region",
            ) from None
        # Another server's own code and status are not relayed: only that it did not answer OK.
        raise StageFailed(f"HEAD bucket '{bucket}' failed", "the endpoint refused the request: is it S3?") from None
    except BotoCoreError as exc:
        message = run.scrub(str(exc))
        raise StageFailed(message, f"S3 request to {endpoint} failed: {message}") from None
    return f"bucket '{bucket}' reachable with the given key"


def _s3_list(client: Any, bucket: str, prefix: str, run: _Run) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1000)
    except ClientError:
        where = f"s3://{bucket}/{prefix}"
        raise StageFailed(
            f"listing {where} failed",
            f"the key may reach bucket '{bucket}' but not list {where}: grant s3:ListBucket on it",
        ) from None
    except BotoCoreError as exc:
        message = run.scrub(str(exc))
        raise StageFailed(message, f"listing s3://{bucket}/{prefix} failed: {message}") from None
    count = int(response.get("KeyCount", 0))
    truncated = bool(response.get("IsTruncated"))
    run.details = {"bucket": bucket, "prefix": prefix, "objects": count, "moreObjects": truncated}
    return f"{count}{'+' if truncated else ''} object(s) under s3://{bucket}/{prefix}"


# -- HTTP ------------------------------------------------------------------------------------------------
_MAX_REDIRECTS = 5


def _http(run: _Run, spec: ConnectionSpec, creds: Credentials | None, label: str) -> None:
    props = spec.properties
    cap = spec.timeout_seconds
    infos = _dns(run, spec.host, spec.port)
    sock = _tcp(run, spec.host, spec.port, infos, cap)
    verify = props.get("verifyTls", True)
    try:
        if props["scheme"] == "https":
            context = _tls_context(verify=verify, check_hostname=verify)
            sock.settimeout(run.remaining(cap))
            run.stage("tls", lambda: _handshake(run, sock, spec.host, spec.port, context, "properties.verifyTls"))
    finally:
        sock.close()
    url = http_base_url(spec) + props.get("healthPath", "/")
    statuses: list[int] = []
    run.stage("authentication", lambda: _http_login(run, spec, creds, label, url, statuses))
    run.stage("privilege", lambda: _http_health(run, url, statuses[0]))


def _http_login(
    run: _Run, spec: ConnectionSpec, creds: Credentials | None, label: str, url: str, statuses: list[int]
) -> str:
    """GET the health path with the credentials; a redirect is followed only on the same origin."""
    import httpx

    from connections.pinned import policy_client

    props = spec.properties
    auth = (creds.username, creds.password or "") if creds else None
    try:
        with policy_client(
            run.policy, verify=props.get("verifyTls", True), timeout=run.remaining(spec.timeout_seconds)
        ) as client:
            status = _get_same_origin(client, url, props.get("headers", {}), auth)
    except httpx.HTTPError as exc:
        message = f"GET {url} failed: {type(exc).__name__}"
        raise StageFailed(message, f"{message}: is the server speaking {props['scheme']} on this port?") from None
    statuses.append(status)
    if status in (401, 403):
        what = f"check {label}" if creds else "the endpoint wants credentials: set credentialSecretRef or credentials"
        raise StageFailed(f"GET {url} was refused", f"the endpoint refused the request: {what}")
    return "answered" + (" with the given credentials" if creds else " without credentials")


def _get_same_origin(client: Any, url: str, headers: dict[str, str], auth: Any) -> int:
    """The status of GET url; same-origin redirects followed (at most 5), any other one refused: the
    credentials must not go elsewhere, and a redirect must not reach what the policy protects."""
    for _ in range(_MAX_REDIRECTS + 1):
        response = client.get(url, headers=headers, auth=auth)
        if not response.is_redirect:
            return int(response.status_code)
        target = response.next_request.url if response.next_request else None
        if target is None or (target.scheme, target.netloc) != (response.url.scheme, response.url.netloc):
            raise StageFailed(
                f"GET {url} redirected to another origin: not followed",
                "the health path redirects to another host or port, which the test does not follow: "
                "point properties.healthPath (or the URL) at the final address",
            )
        url = str(target)
    raise StageFailed(f"GET {url}: too many redirects", "the health path redirects in a loop")


def _http_health(run: _Run, url: str, status: int) -> str:
    """OK or not: a foreign server's status code, headers and body are not relayed."""
    run.details = {"url": url}
    if status >= 400:
        hint = f"GET {url} did not answer OK: check properties.healthPath, and that the server is healthy"
        raise StageFailed(f"GET {url} did not answer OK", hint)
    return f"GET {url} answered OK"


_STAGES: dict[str, Callable[[_Run, ConnectionSpec, Credentials | None, str], None]] = {
    "postgres": _postgres,
    "s3": _s3,
    "http": _http,
}
