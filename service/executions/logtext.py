"""Airflow 3's structured task-log events as readable lines (logs, streams and failure messages)."""

from __future__ import annotations

from service.airflow.models import LogEvent


def render_event(event: LogEvent, with_time: bool = True) -> str:
    """One readable line from one of Airflow 3's structured log events."""
    parts = []
    if with_time and event.timestamp:
        parts.append(event.timestamp[:23].replace("T", " "))
    if event.level:
        parts.append(event.level.upper())
    text = event.event
    for detail in event.error_detail or []:
        if isinstance(detail, dict):
            text += f" | {detail.get('exc_type', '')}: {detail.get('exc_value', '')}"
    parts.append(text)
    return " ".join(p for p in parts if p)


def readable(event: LogEvent) -> bool:
    # "::group::"/"::endgroup::" are folding markers for Airflow's UI, not log content.
    return bool(event.event) and not event.event.startswith("::")
