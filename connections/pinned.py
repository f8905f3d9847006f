"""HTTP clients that obey the network policy: each connection goes to an address the policy checked.

The HTTP libraries resolve a host name themselves when they connect; a check done before that is worth
nothing against a DNS answer that changes in between (DNS rebinding). So the check sits where the socket is
opened — httpx through an httpcore network backend, requests through urllib3 connection classes, botocore
by sending its signed requests through the httpx client — and the socket is connected to the very address
that was checked. The URL is left alone, so the Host header, TLS SNI and certificate checks still use the
name. Every connection is checked, so a redirect to another host (if a caller follows one) is checked too.
Proxies are not used: through a proxy the policy could not see the address finally reached.

No service or airflow imports (see connections.network).
"""

from __future__ import annotations

import contextlib
import functools
import io
import socket
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx

from connections.network import NetworkDenied, NetworkPolicy, current_policy

# httpcore's SOCKET_OPTION: (level, option, value) or (level, option, None, length).
SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]


class _PolicyBackend(httpcore.SyncBackend):
    """Opens TCP connections only to addresses the policy allows, resolving each host once."""

    def __init__(self, policy: NetworkPolicy):
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = self.policy.check(host, port)
        except NetworkDenied as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        errors: list[Exception] = []
        for ip in addresses:
            try:
                return super().connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                errors.append(exc)
        raise errors[0]


class _Body(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]):
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    """httpcore's exceptions as httpx's (the same names), so callers catch httpx.HTTPError as usual."""
    try:
        yield
    except (
        httpcore.TimeoutException,
        httpcore.NetworkError,
        httpcore.ProtocolError,
        httpcore.UnsupportedProtocol,
    ) as exc:
        raise getattr(httpx, type(exc).__name__, httpx.TransportError)(str(exc)) from exc


class PolicyTransport(httpx.BaseTransport):
    """An httpx transport whose every TCP connection goes to an address the network policy allows.

    Its own httpcore pool (public constructor) with the policy's network backend: no proxy, and no reliance
    on how httpx.HTTPTransport builds its pool."""

    def __init__(self, policy: NetworkPolicy | None = None, *, verify: bool = True):
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            network_backend=_PolicyBackend(policy or current_policy()),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = self._pool.handle_request(core)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream),  # type: ignore[arg-type]
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


def policy_client(policy: NetworkPolicy | None = None, *, verify: bool = True, timeout: float = 10.0) -> httpx.Client:
    """An httpx client that follows no redirect and reaches only what the policy allows."""
    return httpx.Client(
        transport=PolicyTransport(policy, verify=verify), timeout=timeout, follow_redirects=False, trust_env=False
    )


# -- requests (the http provider's sessions) ----------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _pool_classes(policy: NetworkPolicy) -> dict[str, type]:
    """urllib3 pool classes whose connections open their socket through the policy."""
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def pinned(base: type) -> type:
        return type(f"Policy{base.__name__}", (_PinnedConnection, base), {"policy": policy})

    return {
        "http": type("PolicyHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": pinned(_http_base())}),
        "https": type("PolicyHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": pinned(_https_base())}),
    }


def _http_base() -> type:
    from urllib3.connection import HTTPConnection

    return HTTPConnection


def _https_base() -> type:
    from urllib3.connection import HTTPSConnection

    return HTTPSConnection


class _PinnedConnection:
    """Mixed into urllib3's HTTP(S)Connection: _new_conn resolves once, checks, connects to that address.
    TLS (HTTPSConnection.connect) still verifies the certificate against the host name."""

    policy: NetworkPolicy
    _dns_host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any

    def _new_conn(self) -> socket.socket:
        from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
        from urllib3.util import connection

        try:
            addresses = self.policy.check(self._dns_host, self.port)
        except NetworkDenied as exc:
            raise NewConnectionError(self, str(exc)) from exc  # type: ignore[arg-type]
        except socket.gaierror as exc:
            raise NameResolutionError(self._dns_host, self, exc) from exc  # type: ignore[arg-type]
        error: Exception | None = None
        for ip in addresses:
            try:
                return connection.create_connection(
                    (str(ip), self.port), self.timeout, self.source_address, self.socket_options
                )
            except TimeoutError as exc:
                error = ConnectTimeoutError(self, f"connection to {self._dns_host} timed out")
                error.__cause__ = exc
            except OSError as exc:
                error = NewConnectionError(self, f"failed to establish a new connection: {exc}")  # type: ignore[arg-type]
        assert error is not None
        raise error


def policy_adapter(policy: NetworkPolicy | None = None) -> Any:
    """A requests HTTPAdapter whose connections obey the policy; it refuses to use a proxy."""
    from requests.adapters import HTTPAdapter
    from requests.exceptions import ProxyError

    chosen = policy or current_policy()

    class PolicyAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = _pool_classes(chosen)

        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
            raise ProxyError("tenant traffic does not go through a proxy: the network policy must see its address")

    return PolicyAdapter()


def enforce_on_session(session: Any, policy: NetworkPolicy | None = None) -> Any:
    """Make a requests session obey the policy: both schemes through the policy adapter, no proxies."""
    adapter = policy_adapter(policy)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.proxies = {}
    session.trust_env = False  # HTTP(S)_PROXY from the environment would bypass the check
    return session


# -- botocore (S3) -------------------------------------------------------------------------------------
class _RawBody(io.BytesIO):
    """What botocore reads a response body from (`stream()` for errors, `read()` for object bodies)."""

    def stream(self, amt: int = 1024 * 1024, decode_content: bool = True) -> Iterator[bytes]:
        while chunk := self.read(amt):
            yield chunk


def enforce_on_boto_client(
    client: Any, policy: NetworkPolicy | None = None, *, verify: bool = True, timeout: float = 60.0
) -> Any:
    """Send every request of a boto3 client through the policy's httpx client (botocore's public
    `before-send` event: a handler that returns a response replaces botocore's own sending)."""
    http = policy_client(policy, verify=verify, timeout=timeout)

    def send(request: Any, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse
        from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, HTTPClientError

        body = request.body.read() if hasattr(request.body, "read") else request.body
        headers = {k: v for k, v in request.headers.items() if k.lower() != "expect"}
        try:
            response = http.request(request.method, request.url, headers=headers, content=body or b"")
        except httpx.ConnectTimeout as exc:
            raise ConnectTimeoutError(endpoint_url=request.url, error=exc) from exc
        except httpx.ConnectError as exc:
            raise EndpointConnectionError(endpoint_url=request.url, error=exc) from exc
        except httpx.HTTPError as exc:
            raise HTTPClientError(error=exc) from exc
        return AWSResponse(request.url, response.status_code, dict(response.headers), _RawBody(response.content))

    client.meta.events.register("before-send", send)
    return client
