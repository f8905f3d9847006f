"""Airflow 3's structured task-log events as readable lines (logs, streams and failure messages)."""

from __future__ import annotations

from typing import Any


def render_event(event: dict[str, Any], with_time: bool = True) -> str:
    """One readable line from one of Airflow 3's structured log events."""
    parts = []
    if with_time and event.get("timestamp"):
        parts.append(str(event["timestamp"])[:23].replace("T", " "))
    if event.get("level"):
        parts.append(str(event["level"]).upper())
    text = str(event.get("event", ""))
    for detail in event.get("error_detail") or []:
        if isinstance(detail, dict):
            text += f" | {detail.get('exc_type', '')}: {detail.get('exc_value', '')}"
    parts.append(text)
    return " ".join(p for p in parts if p)


def readable(event: dict[str, Any]) -> bool:
    # "::group::"/"::endgroup::" are folding markers for Airflow's UI, not log content.
    text = str(event.get("event") or "")
    return bool(text) and not text.startswith("::")
