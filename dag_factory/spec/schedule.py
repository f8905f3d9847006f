"""Schedule times: cron expression + IANA time zone -> fire times in UTC. Imports no Airflow.

The one implementation of "when does this schedule fire", used by the service (nextRunAt) and by the
Airflow timetable (dag_factory.timetables), so both always agree.

The cron is read in the schedule's zone, so daylight-saving time follows the zone: a wall-clock time that
does not exist on the spring-forward day (02:30 in America/New_York) fires at the same offset as the
previous instant (03:30 EDT), an ambiguous time on the fall-back day fires once, at its first occurrence.
Crons that fire every hour (hour field `*`) step through a DST change by elapsed time instead, so they
neither skip nor repeat the changed hour.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, croniter

PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MAX_STEPS = 1000  # guards the DST loop below; a real cron needs one or two
# Airflow run ids of scheduled runs: `scheduled__<scheduleId>__<cron time ISO>` (see dag_factory.timetables).
RUN_ID_PREFIX = "scheduled__"
SCHEDULE_ID_PREFIX = "sch-"  # every schedule id starts with it (service.schedules)


def schedule_id_of(run_id: str | None) -> str | None:
    """The schedule id a run id names, or None (not a run started by one of a pipeline's schedules)."""
    if not run_id or not run_id.startswith(RUN_ID_PREFIX):
        return None
    parts = run_id[len(RUN_ID_PREFIX) :].split("__", 1)
    return parts[0] if len(parts) == 2 and parts[0].startswith(SCHEDULE_ID_PREFIX) else None


def normalize_cron(expression: str) -> str:
    return PRESETS.get(expression.strip(), " ".join(expression.split()))


def cron_error(expression: str) -> str | None:
    """Why `expression` is not a usable 5-field cron, or None."""
    expr = normalize_cron(expression)
    if len(expr.split()) != 5:
        return "must have 5 fields (minute hour day-of-month month day-of-week), or be @hourly, @daily, @weekly, ..."
    try:
        it = croniter(expr, datetime(2026, 1, 1))
        it.get_next(datetime)
    except (CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, ValueError, KeyError) as exc:
        return f"invalid cron expression: {exc}"
    return None


def timezone_error(name: str) -> str | None:
    """Why `name` is not an IANA time zone name, or None."""
    if not name or name != name.strip() or name.lower() == "localtime" or name.startswith("/"):
        return "must be an IANA time zone name such as America/New_York or UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone '{name}' (use an IANA name such as America/New_York or UTC)"
    if name not in _zone_names():
        return f"unknown time zone '{name}' (use an IANA name such as America/New_York or UTC)"
    return None


_ZONES: set[str] | None = None


def _zone_names() -> set[str]:
    global _ZONES
    if _ZONES is None:
        _ZONES = available_timezones() | {"UTC"}
    return _ZONES


def _covers_every_hour(expr: str) -> bool:
    return expr.split()[1] == "*"


def _plain(value: datetime) -> datetime:
    # A plain UTC datetime (Airflow passes pendulum's, whose arithmetic differs).
    return datetime.fromtimestamp(value.timestamp(), UTC).replace(microsecond=value.microsecond)


def _fires(expr: str, zone: ZoneInfo, start: datetime, forward: bool) -> Iterator[datetime]:
    """Fire times (UTC) from `start` on, forward or backward, never including `start` itself."""
    naive = start.astimezone(zone).replace(tzinfo=None)
    it = croniter(expr, naive)
    for _ in range(_MAX_STEPS):
        scheduled: datetime = it.get_next(datetime) if forward else it.get_prev(datetime)
        if _covers_every_hour(expr):
            # Elapsed time from `start`: a changed hour is neither skipped nor run twice.
            fire = start + (scheduled - naive)
        else:
            # fold=0: a missing time takes the offset before the change (02:30 -> 03:30 EDT), a repeated
            # time its first occurrence.
            fire = scheduled.replace(tzinfo=zone).astimezone(UTC)
        fire = fire.replace(microsecond=0)
        if (fire > start) if forward else (fire < start):
            yield fire
            return
    raise ValueError(f"cron '{expr}' has no fire time {'after' if forward else 'before'} {start.isoformat()}")


def next_fire(expression: str, timezone: str, after: datetime, *, inclusive: bool = False) -> datetime:
    """The first fire time strictly after `after` (at or after, with `inclusive`), as an aware UTC datetime."""
    start = _plain(after) - (timedelta(microseconds=1) if inclusive else timedelta())
    return next(_fires(normalize_cron(expression), ZoneInfo(timezone), start, forward=True))


def prev_fire(expression: str, timezone: str, before: datetime, *, inclusive: bool = True) -> datetime:
    """The latest fire time at or before `before` (strictly before, without `inclusive`), in UTC."""
    start = _plain(before) + (timedelta(microseconds=1) if inclusive else timedelta())
    return next(_fires(normalize_cron(expression), ZoneInfo(timezone), start, forward=False))


def schedule_at(schedules: Sequence[Mapping[str, Any]], when: datetime) -> Mapping[str, Any] | None:
    """Which of a pipeline's enabled schedules (in timetable order) a scheduled run's logical date belongs to:
    schedule number i fires i microseconds after its cron times (dag_factory.timetables)."""
    index = when.microsecond
    if index >= len(schedules):
        return None
    s = schedules[index]
    cron_time = _plain(when).replace(microsecond=0)
    return s if next_fire(s["cron"], s["timezone"], cron_time, inclusive=True) == cron_time else None


def describe(expression: str) -> str:
    """Human-readable cron, e.g. 'At 06:00' for '0 6 * * *'."""
    from cron_descriptor import CasingTypeEnum, ExpressionDescriptor

    expr = normalize_cron(expression)
    try:
        return str(
            ExpressionDescriptor(
                expr, casing_type=CasingTypeEnum.Sentence, use_24hour_time_format=True
            ).get_description()
        )
    except Exception:  # noqa: BLE001 - a description is a nicety; the cron itself was validated
        return expr
