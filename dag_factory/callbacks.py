"""Run-level notifications: a failed run, a missed SLA. Each POSTs a small JSON summary to the pipeline's
webhook — names, ids, states and times only: never connection details, parameters' values or SQL.

Airflow runs a DAG's on_failure_callback in the dag-processor (synchronously) and Deadline Alert callbacks
in the triggerer (awaited), hence one class for the first and a coroutine for the second.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from airflow.sdk.bases.notifier import BaseNotifier

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


class WebhookNotifier(BaseNotifier):
    """on_failure_callback of a pipeline DAG: POST the run's failure summary to `url`."""

    def __init__(self, url: str):
        super().__init__()
        self.url = url

    def notify(self, context: Any) -> None:
        summary = failure_summary(context)
        try:
            httpx.post(self.url, json=summary, timeout=TIMEOUT).raise_for_status()
        except httpx.HTTPError as exc:  # a notification must never fail anything else
            log.warning("failure webhook for %s not delivered: %s", summary["dag_id"], type(exc).__name__)


async def deadline_missed(
    *, dag_id: str, sla_seconds: int, webhook: str | None = None, context: Any = None, **_: Any
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
    if not webhook:
        return
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            (await client.post(webhook, json=summary)).raise_for_status()
    except httpx.HTTPError as exc:
        log.warning("SLA webhook for %s not delivered: %s", dag_id, type(exc).__name__)
