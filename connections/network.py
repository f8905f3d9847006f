"""The network policy: which addresses a tenant's connections, sources, sinks and webhooks may reach.

Every tenant shares the service and the Airflow workers, so what a tenant names as a host must never make
them call their own endpoints (the service, Airflow's api-server, the log servers of workers and triggerers),
the cloud metadata service (credentials of the machine), or any private or loopback address the operator has
not opened on purpose. The decision is made on the RESOLVED addresses (every one of them: a name resolving to
one public and one private address is refused), and the caller connects to the very address that was
checked, so a DNS answer that changes between the check and the connect (DNS rebinding) gains nothing.

Configured from the environment, identically in the service and in every Airflow process:
- `PIPELINE_ALLOWED_NETWORKS`: comma-separated CIDRs of private or loopback networks tenants may reach
  (default: none). Public addresses are always allowed; link-local / metadata, multicast, unspecified and
  broadcast addresses never are, whatever this says.
- `PIPELINE_DENIED_ENDPOINTS`: comma-separated `host:port` (`[v6]:port`, `*:port` = that port on any host)
  that are never reachable, even inside an allowed network. A loopback, unspecified or `localhost` host means
  "this machine": the port on any loopback address and on this host's own addresses. Added to it always:
  Airflow's log-server ports on every host (`AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT`, default 8793,
  `…__TRIGGER_LOG_SERVER_PORT`, default 8794) and the api-server of `AIRFLOW__API__BASE_URL` /
  `AIRFLOW__CORE__EXECUTION_API_SERVER_URL` when set.

No service or airflow imports: the service (connection tests, checks on creation) and dag_factory (hooks,
callbacks on the workers) both use this module.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

ALLOWED_ENV = "PIPELINE_ALLOWED_NETWORKS"
DENIED_ENV = "PIPELINE_DENIED_ENDPOINTS"
# What `make up` and the end-to-end harness allow, so that the local tour reaches its local PostgreSQL.
LOOPBACK_NETWORKS = "127.0.0.0/8,::1/128"
LOG_SERVER_PORTS = (
    ("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", 8793),
    ("AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT", 8794),
)
_AIRFLOW_URL_ENVS = ("AIRFLOW__API__BASE_URL", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[IPAddress]]

OWN_ENDPOINT = "an endpoint of the service or of Airflow itself"
# Refused whatever PIPELINE_ALLOWED_NETWORKS says: no tenant has a reason to reach these.
_NEVER: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), reason)
    for net, reason in (
        ("0.0.0.0/8", "an unspecified address"),  # connecting to 0.0.0.0 reaches this machine
        ("::/128", "an unspecified address"),
        ("169.254.0.0/16", "a link-local / cloud metadata address"),
        ("fe80::/10", "a link-local address"),
        ("fd00:ec2::254/128", "a cloud metadata address"),
        ("100.100.100.200/32", "a cloud metadata address"),  # Alibaba Cloud's
        ("224.0.0.0/4", "a multicast address"),
        ("ff00::/8", "a multicast address"),
        ("255.255.255.255/32", "a broadcast address"),
    )
)
# Names that stand for a refused address without asking DNS (checked when a connection is created).
_KNOWN_NAMES = {
    "localhost": ("127.0.0.1", "::1"),
    "localhost.localdomain": ("127.0.0.1", "::1"),
    "ip6-localhost": ("::1",),
    "ip6-loopback": ("::1",),
    "metadata": ("169.254.169.254",),
    "metadata.google.internal": ("169.254.169.254",),
    "instance-data": ("169.254.169.254",),
    "instance-data.ec2.internal": ("169.254.169.254",),
}
# The spellings inet_aton (and so getaddrinfo) reads as IPv4: 2852039166, 0251.0376.0251.0376, 0xa9fea9fe.
_INET_ATON = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$", re.IGNORECASE)


class NetworkDenied(OSError):
    """A host the network policy refuses. An OSError, so that HTTP clients treat it as a failed connect."""

    def __init__(self, host: str, port: int, reason: str):
        super().__init__(f"{host}:{port} is refused by the network policy: it is {reason}")
        self.host, self.port, self.reason = host, port, reason

    @property
    def hint(self) -> str:
        """What a person can do about it; names the policy and the variable, never a resolved address."""
        if self.reason == OWN_ENDPOINT:
            return (
                f"{self.host}:{self.port} is {self.reason}, which no connection may reach "
                f"(the network policy, {DENIED_ENV}): use the address of the system itself"
            )
        return (
            f"the network policy refuses {self.host}:{self.port} ({self.reason}): only public addresses and the "
            f"private or loopback networks the operator lists in {ALLOWED_ENV} may be reached"
        )


@dataclass(frozen=True)
class Endpoint:
    """A denied host:port. `host` is an address, `*` (any host) or `local` (this machine)."""

    host: str
    port: int


def literal_address(host: str) -> IPAddress | None:
    """The address a host spells directly (any form getaddrinfo accepts as a number), else None."""
    text = host.strip().rstrip(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ip_address_of(text)  # an IPv6 zone (`fe80::1%eth0`) does not change what is reached
    except ValueError:
        pass
    if _INET_ATON.match(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def ip_address_of(text: str) -> IPAddress:
    """An address as getaddrinfo or getpeername give it (an IPv6 one may carry a `%zone`)."""
    return ipaddress.ip_address(str(text).split("%", 1)[0])


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address getaddrinfo returns for host (TCP), in its order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ip_address_of(str(info[4][0])) for info in infos))


def resolve(host: str, port: int, resolver: Resolver | None = None) -> list[IPAddress]:
    """The addresses `host` stands for: itself when it is a literal address (in any spelling), else DNS."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    return (resolver or system_resolver)(host, port)  # looked up now: tests stub system_resolver


def _embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses carried inside an IPv6 one (6to4, Teredo, NAT64, IPv4-compatible): a route to them."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found = [ip.sixtofour] if ip.sixtofour else []
    found += list(ip.teredo) if ip.teredo else []
    low = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in ipaddress.ip_network("64:ff9b::/96") or (int(ip) >> 32 == 0 and int(ip) > 1):
        found.append(low)
    return found


@dataclass(frozen=True)
class NetworkPolicy:
    """The decision for one address and port; built from the environment by `current_policy()`."""

    allowed: tuple[IPNetwork, ...] = ()
    denied: frozenset[Endpoint] = frozenset()
    local_addresses: frozenset[IPAddress] = field(default_factory=frozenset)

    def refusal(self, ip: IPAddress, port: int) -> str | None:
        """Why `ip:port` may not be reached (None: it may). An IPv4-mapped IPv6 address is its IPv4 one."""
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        for candidate in (ip, *_embedded_ipv4(ip)):
            reason = self._refusal_of(candidate, port)
            if reason is not None:
                return reason
        return None

    def _refusal_of(self, ip: IPAddress, port: int) -> str | None:
        if self._is_own_endpoint(ip, port):
            return OWN_ENDPOINT
        for network, reason in _NEVER:
            if ip.version == network.version and ip in network:
                return reason
        allowed_by = [n for n in self.allowed if ip.version == n.version and ip in n]
        if any(n.prefixlen < n.max_prefixlen - 1 and ip == n.broadcast_address for n in allowed_by):
            return "a broadcast address"
        if allowed_by or ip.is_global:
            return None
        kind = "a loopback" if ip.is_loopback else "a private" if ip.is_private else "a non-public"
        return f"{kind} address outside {ALLOWED_ENV}"

    def _is_own_endpoint(self, ip: IPAddress, port: int) -> bool:
        local = ip.is_loopback or ip.is_unspecified or ip in self.local_addresses
        for endpoint in self.denied:
            if endpoint.port != port:
                continue
            if endpoint.host == "*" or (endpoint.host == "local" and local) or endpoint.host == str(ip):
                return True
        return False

    def check(self, host: str, port: int, resolver: Resolver | None = None) -> list[IPAddress]:
        """The addresses of host to connect to, all allowed; NetworkDenied if any one is refused (a name
        with one refused address could be answered with that one next time). socket.gaierror if unknown."""
        addresses = resolve(host, port, resolver)
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, f"no address for {host}")
        for ip in addresses:
            reason = self.refusal(ip, port)
            if reason is not None:
                raise NetworkDenied(host, port, reason)
        return addresses

    def refusal_without_dns(self, host: str, port: int) -> str | None:
        """Why a host is refused when that is known without asking DNS (literal addresses, `localhost`,
        metadata names): for checks when a connection is stored. Other names are checked when resolved."""
        name = host.strip().rstrip(".").lower()
        literal = literal_address(name)
        spelled = [str(literal)] if literal else list(_KNOWN_NAMES.get(name, ()))
        if not spelled and name.endswith(".localhost"):
            spelled = ["127.0.0.1"]
        for address in spelled:
            reason = self.refusal(ipaddress.ip_address(address), port)
            if reason is not None:
                return reason
        return None


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """`10.0.0.0/8, ::1/128` -> networks; ValueError naming the entry that is not a CIDR."""
    networks = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{ALLOWED_ENV}: {entry!r} is not a network (CIDR such as 10.0.0.0/8)") from None
    return tuple(networks)


def split_host_port(entry: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `*:port` -> (host, port); ValueError if it is none of these."""
    host, _, port = entry.strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{DENIED_ENV}: {entry!r} is not host:port")
    return host.strip("[]"), int(port)


def parse_endpoints(entries: Iterable[str], resolver: Resolver | None = None) -> frozenset[Endpoint]:
    """Denied endpoints with their hosts resolved now (a name the workers cannot resolve is skipped)."""
    found: set[Endpoint] = set()
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        host, port = split_host_port(entry)
        if host == "*":
            found.add(Endpoint("*", port))
            continue
        try:
            addresses = resolve(host, port, resolver)
        except OSError:
            log.warning("%s: cannot resolve %r, entry ignored", DENIED_ENV, host)
            continue
        for ip in addresses:
            local = ip.is_loopback or ip.is_unspecified
            found.add(Endpoint("local" if local else str(ip), port))
    return frozenset(found)


def _url_endpoint(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return f"[{parts.hostname}]:{port}" if ":" in parts.hostname else f"{parts.hostname}:{port}"


def default_denied(env: dict[str, str]) -> list[str]:
    """What every policy denies besides PIPELINE_DENIED_ENDPOINTS: Airflow's log servers on every host and
    the api-server this process talks to (set in every Airflow process)."""
    entries = [f"*:{env.get(name) or default}" for name, default in LOG_SERVER_PORTS]
    urls = (env.get(name) for name in _AIRFLOW_URL_ENVS)
    entries += [e for e in (_url_endpoint(u) for u in urls if u) if e]
    return entries


def _this_host(resolver: Resolver | None) -> frozenset[IPAddress]:
    """This machine's own addresses, where its services listen besides loopback."""
    try:
        return frozenset((resolver or system_resolver)(socket.gethostname(), 0))
    except OSError:
        return frozenset()


def build_policy(
    allowed: str, denied: Iterable[str], env: dict[str, str] | None = None, resolver: Resolver | None = None
) -> NetworkPolicy:
    """The policy from the variables' values; `env` supplies the always-denied Airflow endpoints."""
    entries = [*default_denied(dict(os.environ) if env is None else env), *denied]
    return NetworkPolicy(parse_networks(allowed), parse_endpoints(entries, resolver), _this_host(resolver))


@functools.lru_cache(maxsize=8)
def _cached_policy(allowed: str, denied: str, airflow_env: tuple[tuple[str, str], ...]) -> NetworkPolicy:
    return build_policy(allowed, denied.split(","), dict(airflow_env))


def policy_of(allowed: str, denied: str) -> NetworkPolicy:
    """The policy for these variable values (cached: building it resolves names)."""
    names = [name for name, _ in LOG_SERVER_PORTS] + list(_AIRFLOW_URL_ENVS)
    airflow_env = tuple((name, os.environ[name]) for name in names if os.environ.get(name))
    return _cached_policy(allowed, denied, airflow_env)


def current_policy() -> NetworkPolicy:
    """The policy of this process's environment: what the workers, triggerers and dag-processors apply."""
    return policy_of(os.environ.get(ALLOWED_ENV, ""), os.environ.get(DENIED_ENV, ""))
