"""Run-level notifications: a failed run, a missed SLA. Each POSTs a small JSON summary to the pipeline's
webhook (a URL, or an Airflow http connection: its URL, headers and basic auth) — names, ids, states and
times only: never connection details, parameters' values or SQL. A failed delivery is logged by the type of
its error only (a message could quote the URL, and a webhook URL may carry a token).

Deliveries obey the network policy (connections.network): the address is checked when the connection is
opened (so a webhook can never be Airflow's or the service's own API, nor a metadata address), and no
redirect is followed. A refused delivery is logged like any other failed one.

Airflow runs a DAG's on_failure_callback in the dag-processor (synchronously) and Deadline Alert callbacks
in the triggerer (awaited), hence one class for the first and a coroutine for the second.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import httpx
from airflow.sdk.bases.notifier import BaseNotifier

from connections.pinned import policy_client

log = logging.getLogger(__name__)
TIMEOUT = 10.0


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def failure_summary(context: Any) -> dict[str, Any]:
    run = context.get("dag_run")
    ti = context.get("ti") or context.get("task_instance")
    return {
        "event": "pipeline_run_failed",
        "dag_id": getattr(run, "dag_id", None) or getattr(context.get("dag"), "dag_id", None),
        "run_id": getattr(run, "run_id", None),
        "state": _text(getattr(run, "state", None)),
        "reason": _text(context.get("reason")),
        "failed_task": getattr(ti, "task_id", None),
        "start_date": _text(getattr(run, "start_date", None)),
        "end_date": _text(getattr(run, "end_date", None)),
    }


def _post_to_connection(summary: dict[str, Any], conn_id: str, path: str) -> None:
    """POST through the connection's session (its base URL, headers and auth), which obeys the policy."""
    from dag_factory.hooks.http_api import session_for

    session, base_url, options = session_for(conn_id)
    with session:
        url = base_url.rstrip("/") + "/" + path.lstrip("/") if path else base_url
        if (urlsplit(url).scheme, urlsplit(url).netloc) != (urlsplit(base_url).scheme, urlsplit(base_url).netloc):
            raise ValueError("the path leaves the connection's host")
        options["timeout"] = TIMEOUT
        response = session.post(url, json=summary, allow_redirects=False, **options)
        response.raise_for_status()
        if response.is_redirect:  # a redirect is not a delivery, and is not followed
            raise ValueError("redirected: not followed")


def post_summary(
    summary: dict[str, Any], *, url: str | None = None, conn_id: str | None = None, path: str = ""
) -> None:
    """POST `summary` to `url`, or to the http connection `conn_id` (+ `path`). Never raises: a notification
    must not fail anything else."""
    what = "SLA" if summary.get("event") == "pipeline_sla_missed" else "failure"
    try:
        if conn_id:
            _post_to_connection(summary, conn_id, path)
        elif url:
            with policy_client(timeout=TIMEOUT) as client:
                response = client.post(url, json=summary)
            if not response.is_success:  # a redirect is not a delivery
                raise httpx.HTTPStatusError("not delivered", request=response.request, response=response)
    except Exception as exc:  # noqa: BLE001 - any failure to deliver is only logged
        log.warning("%s webhook for %s not delivered: %s", what, summary.get("dag_id"), type(exc).__name__)


class WebhookNotifier(BaseNotifier):
    """on_failure_callback of a pipeline DAG: POST the run's failure summary to `url` or connection `conn_id`."""

    def __init__(self, url: str | None = None, conn_id: str | None = None, path: str = ""):
        super().__init__()
        self.url = url
        self.conn_id = conn_id
        self.path = path

    def notify(self, context: Any) -> None:
        post_summary(failure_summary(context), url=self.url, conn_id=self.conn_id, path=self.path)


async def deadline_missed(
    *,
    dag_id: str,
    sla_seconds: int,
    url: str | None = None,
    conn_id: str | None = None,
    path: str = "",
    webhook: str | None = None,  # the URL, as DAG files written before `url` and `conn_id` pass it
    context: Any = None,
    **_: Any,
) -> None:
    """Deadline Alert callback (Airflow 3's replacement of SLAs): the run is still unfinished after sla_seconds."""
    run = (context or {}).get("dag_run") if isinstance(context, dict) else None
    summary = {
        "event": "pipeline_sla_missed",
        "dag_id": dag_id,
        "run_id": getattr(run, "run_id", None) or (run.get("run_id") if isinstance(run, dict) else None),
        "sla_seconds": sla_seconds,
    }
    log.warning("pipeline %s missed its SLA of %s s: %s", dag_id, sla_seconds, summary)
    if url or webhook or conn_id:
        # In a thread: the connection lookup talks to the triggerer's supervisor synchronously.
        await asyncio.to_thread(post_summary, summary, url=url or webhook, conn_id=conn_id, path=path)
