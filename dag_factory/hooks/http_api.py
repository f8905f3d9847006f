"""JSON records from an HTTP API, page after page (page number, next link or cursor).

The requests session comes from the http provider's HttpHook (base URL, basic auth and headers of the Airflow
connection); the pagination walk itself only needs a session, so it is testable against any local server.
Next links and redirects must stay on the connection's origin: the session's credentials never go to another
host. The session obeys the network policy (connections.network): each connection goes to an address checked
when it is opened, so neither a DNS answer nor a redirect can point a tenant's source at Airflow's own API.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

from dag_factory.exceptions import DagFactoryError

log = logging.getLogger(__name__)


def dig(document: Any, path: str) -> Any:
    """The value at `a.b.0.c` in a JSON document (None when any step is missing); '' is the document."""
    value = document
    for part in path.split(".") if path else []:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def records_of(document: Any, records_path: str) -> list[dict[str, Any]]:
    found = dig(document, records_path)
    if found is None:
        return []
    if isinstance(found, dict):
        found = [found]
    if not isinstance(found, list):
        raise DagFactoryError(f"records_path {records_path!r} points to a {type(found).__name__}, not a list")
    return [r if isinstance(r, dict) else {"value": r} for r in found]


@dataclass
class Fetched:
    records: list[dict[str, Any]] = field(default_factory=list)
    pages: int = 0
    bytes: int = 0
    truncated: bool = False  # stopped by max_pages with more pages announced


def _same_origin(url: str, base_url: str) -> bool:
    a, b = urlsplit(url), urlsplit(base_url)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)


def fetch_records(
    session: Any,
    base_url: str,
    path: str,
    *,
    params: dict[str, Any] | None = None,
    records_path: str = "",
    pagination: dict[str, Any] | None = None,
    max_pages: int = 100,
    request_options: dict[str, Any] | None = None,
) -> Fetched:
    """GET `path` (relative to `base_url`) and the following pages; every record of every page."""
    base = base_url.rstrip("/") + "/"
    url: str | None = urljoin(base, path.lstrip("/"))
    if not _same_origin(str(url), base):
        raise DagFactoryError(f"path {path!r} leaves the connection's host: not requested")
    query = {k: v for k, v in (params or {}).items()}
    kind = (pagination or {}).get("type")
    p = pagination or {}
    page = int(p.get("start", 1))
    out = Fetched()
    while url is not None:
        if out.pages >= max_pages:
            out.truncated = True
            log.warning("stopped after max_pages=%s pages: more pages were announced", max_pages)
            break
        if kind == "page_number":
            query[p.get("page_param", "page")] = page
            if p.get("size_param") and p.get("size"):
                query[p["size_param"]] = p["size"]
        body, size = _get_json(session, url, query, request_options or {})
        out.pages += 1
        out.bytes += size
        records = records_of(body, records_path)
        out.records += records
        url = _next_url(kind, p, body, url, query, records, base)
        page += 1
    return out


def _next_url(
    kind: str | None, p: dict[str, Any], body: Any, url: str, query: dict[str, Any], records: list[Any], base: str
) -> str | None:
    if kind == "page_number":
        size = p.get("size")
        return url if records and not (size and len(records) < size) else None
    if kind == "next_link":
        link = dig(body, p.get("next_path", "next"))
        if not link:
            return None
        nxt = urljoin(url, str(link))
        if not _same_origin(nxt, base):
            raise DagFactoryError(f"next link {nxt!r} leaves the connection's host: not followed")
        query.clear()  # the link carries its own query
        return nxt
    if kind == "cursor":
        cursor = dig(body, p["cursor_path"])
        if cursor in (None, ""):
            return None
        query[p.get("cursor_param", "cursor")] = cursor
        return url
    return None


_MAX_REDIRECTS = 5


def _get(session: Any, url: str, query: dict[str, Any], options: dict[str, Any]) -> Any:
    """GET url, following redirects only on its own origin (at most 5): requests would follow any."""
    import requests

    origin = url
    for _ in range(_MAX_REDIRECTS + 1):
        try:
            resp = session.get(
                url, params=query, headers={"Accept": "application/json"}, allow_redirects=False, **options
            )
        except requests.RequestException as exc:
            raise DagFactoryError(f"GET {url}: {type(exc).__name__}: {exc}") from None
        if not resp.is_redirect:
            return resp
        url = urljoin(resp.url, resp.headers["location"])
        if not _same_origin(url, origin):
            raise DagFactoryError(f"GET {resp.url}: redirected to another origin: not followed")
        query = {}  # the location carries its own query
    raise DagFactoryError(f"GET {origin}: more than {_MAX_REDIRECTS} redirects")


def _get_json(session: Any, url: str, query: dict[str, Any], options: dict[str, Any]) -> tuple[Any, int]:
    resp = _get(session, url, query, options)
    if resp.status_code >= 400:
        raise DagFactoryError(f"GET {resp.url}: HTTP {resp.status_code}: {resp.text[:300]}")
    try:
        return resp.json(), len(resp.content)
    except ValueError:
        raise DagFactoryError(f"GET {resp.url}: the response is not JSON: {resp.text[:200]!r}") from None


def session_for(conn_id: str) -> tuple[Any, str, dict[str, Any]]:
    """(requests session with the connection's auth and headers, base URL, request options: timeout, verify)."""
    from airflow.providers.http.hooks.http import HttpHook

    from connections.pinned import enforce_on_session

    hook = HttpHook(method="GET", http_conn_id=conn_id)
    session = enforce_on_session(hook.get_conn())
    extra = hook.get_connection(conn_id).extra_dejson or {}
    options: dict[str, Any] = {"timeout": extra.get("timeout", 60)}
    if extra.get("verify") is False:
        options["verify"] = False
    return session, hook.base_url, options


def records_table(records: list[dict[str, Any]]) -> Any:
    """The records as an Arrow table, with the union of their keys as columns. A key whose values do not
    share one type (a number here, a string there) becomes a text column (JSON text for non-strings)."""
    import pyarrow as pa

    try:
        return pa.Table.from_struct_array(pa.array(records))
    except (pa.ArrowException, ValueError, TypeError):
        pass
    names = list(dict.fromkeys(k for r in records for k in r))
    columns = []
    for name in names:
        values = [r.get(name) for r in records]
        try:
            columns.append(pa.array(values))
        except (pa.ArrowException, ValueError, TypeError):
            text = [None if v is None else v if isinstance(v, str) else json.dumps(v, default=str) for v in values]
            columns.append(pa.array(text, pa.string()))
    return pa.table(columns, names=names)
