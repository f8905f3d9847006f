"""Task log events as Airflow serves them, minus what describes the Airflow host.

Airflow 3 opens every task log with a "Log message source details" group whose lines are the absolute paths
of its log files (`/…/logs/dag_id=…/run_id=…/task_id=…/attempt=1.log`) or the worker's log-server URL; log
lines and exception texts name files under Airflow's home and the dags folder. A tenant needs none of that and
an attacker learns the host's layout from it, so: the source group is dropped, any other absolute path keeps
only its last part (`…/attempt=1.log`), and an event keeps only the fields the service renders.
"""

from __future__ import annotations

import re
from typing import Any

SOURCE_GROUP = "::group::Log message source details"
END_GROUP = "::endgroup::"
_KEPT = ("timestamp", "level", "event", "logger")
# An absolute POSIX path of two or more parts, not inside a URL (`https://h/a/b`) or a relative path (`a/b/c`).
_HOST_PATH = re.compile(r"(?<![\w.:/~@%+=-])/(?:[^\s/'\"`<>|]+/)+([^\s/'\"`<>|,;)\]]*)")


def without_host_paths(text: str) -> str:
    """`text` with every absolute path shortened to `…/<last part>`."""
    return _HOST_PATH.sub(lambda m: "…/" + m.group(1), text)


def sanitized(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events a tenant may read: no source group, no host paths, only the rendered fields."""
    out: list[dict[str, Any]] = []
    in_sources = False
    for event in events:
        text = str(event.get("event") or "")
        if text == SOURCE_GROUP or in_sources:
            in_sources = text != END_GROUP
            continue
        out.append(_sanitized_event(event))
    return out


def _sanitized_event(event: dict[str, Any]) -> dict[str, Any]:
    clean = {k: event[k] for k in _KEPT if k in event}
    if "event" in clean:
        clean["event"] = without_host_paths(str(clean["event"]))
    details = event.get("error_detail")
    if isinstance(details, list):  # exception type and text only: the frames name the host's files
        clean["error_detail"] = [
            {"exc_type": d.get("exc_type", ""), "exc_value": without_host_paths(str(d.get("exc_value", "")))}
            for d in details
            if isinstance(d, dict)
        ]
    return clean
