"""ScheduleSetTimetable: the schedules of one pipeline (each its own cron, time zone and parameters) as one
Airflow timetable. Registered as an Airflow plugin (dag_factory.plugin) so that the scheduler and the
dag-processor can deserialize it.

- The next run is the earliest next fire time among the schedules. No catch-up: a schedule that is due
  (runs queued behind max_active_runs, Airflow was down) runs once, for its latest fire time, and never for
  a time before it was created or last changed (`since`). Among several due schedules the turn goes round
  (after the one that fired last), so a schedule cannot starve another one of the same period.
- Two schedules firing at the same minute both run: schedule number i fires i microseconds after its cron
  time, so the runs' logical dates differ.
- The run id names the schedule: `scheduled__<scheduleId>__<cron time ISO>`. The operators read it to
  apply that schedule's parameters (schedule_parameters below), and the service reads it to record the run
  as an execution of that schedule.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any, TypedDict

from airflow.timetables.base import DagRunInfo, DataInterval, Timetable

from dag_factory.spec.schedule import (
    RUN_ID_PREFIX,
    describe,
    next_fire,
    normalize_cron,
    prev_fire,
    schedule_at,
    schedule_id_of,
)

if TYPE_CHECKING:
    from airflow.timetables.base import TimeRestriction
    from airflow.utils.types import DagRunType
    from pendulum import DateTime

__all__ = ["RUN_ID_PREFIX", "ScheduleSetTimetable", "schedule_id_of", "schedule_parameters"]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pendulum(value: datetime.datetime) -> DateTime:
    import pendulum

    return pendulum.instance(value.astimezone(datetime.UTC))


class Schedule(TypedDict):
    """One enabled schedule of a pipeline, as the timetable keeps (and serializes) it."""

    id: str
    cron: str
    timezone: str
    parameters: dict[str, Any]
    since: str | None


class ScheduleSetTimetable(Timetable):
    """`schedules`: [{id, cron, timezone, parameters, since}] — the enabled schedules of a pipeline (none: manual
    runs only). Every pipeline DAG has one, so that whichever version of the DAG Airflow's scheduler holds when
    it creates a run, the run id comes from generate_run_id below: unique across DAGs."""

    periodic = True

    def __init__(self, schedules: list[dict[str, Any]], dag_id: str = "") -> None:
        self.schedules: list[Schedule] = [
            {
                "id": str(s["id"]),
                "cron": normalize_cron(s["cron"]),
                "timezone": str(s["timezone"]),
                "parameters": dict(s.get("parameters") or {}),
                "since": s.get("since"),
            }
            for s in schedules
        ]
        self.dag_id = dag_id
        self.can_be_scheduled = bool(self.schedules)
        self.description = "; ".join(f"{describe(s['cron'])} ({s['timezone']})" for s in self.schedules)

    # -- serialization (scheduler and dag-processor must agree) ---------------------------------------
    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> Timetable:
        return cls(data["schedules"], data.get("dag_id", ""))

    def serialize(self) -> dict[str, Any]:
        return {"schedules": self.schedules, "dag_id": self.dag_id}

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ScheduleSetTimetable)
            and self.schedules == other.schedules
            and self.dag_id == other.dag_id
        )

    def __hash__(self) -> int:
        return hash((self.dag_id, *((s["id"], s["cron"], s["timezone"]) for s in self.schedules)))

    @property
    def summary(self) -> str:
        return ", ".join(f"{s['cron']} {s['timezone']}" for s in self.schedules) or "None"

    def validate(self) -> None:
        from airflow.exceptions import AirflowTimetableInvalid

        from dag_factory.spec.schedule import cron_error, timezone_error

        for s in self.schedules:
            problem = cron_error(s["cron"]) or timezone_error(s["timezone"])
            if problem:
                raise AirflowTimetableInvalid(f"schedule {s['id']}: {problem}")

    # -- scheduling -----------------------------------------------------------------------------------
    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        return DataInterval(run_after, run_after)

    def _since(self, s: Schedule) -> datetime.datetime | None:
        since = s["since"]
        return datetime.datetime.fromisoformat(since) if since else None

    def candidate(
        self, index: int, *, now: datetime.datetime, last: datetime.datetime | None, earliest: datetime.datetime | None
    ) -> tuple[datetime.datetime, bool]:
        """Schedule `index`'s next run time (shifted by `index` microseconds) and whether it is already due:
        its latest fire time not after now, or else its next one; never before `since`, never at or before
        the last scheduled run (so logical dates only grow)."""
        s = self.schedules[index]
        shift = datetime.timedelta(microseconds=index)
        bounds = [t for t in (self._since(s), earliest) if t is not None]
        if last is not None:
            bounds.append(last + datetime.timedelta(microseconds=1))
        first = next_fire(s["cron"], s["timezone"], max(bounds) - shift, inclusive=True) if bounds else None
        if first is not None and first + shift > now:
            return first + shift, False
        return prev_fire(s["cron"], s["timezone"], now - shift) + shift, True

    def next_dagrun_info(
        self, *, last_automated_data_interval: DataInterval | None, restriction: TimeRestriction
    ) -> DagRunInfo | None:
        if not self.schedules:
            return None
        now = _now()
        last = last_automated_data_interval.end if last_automated_data_interval else None
        count = len(self.schedules)
        candidates = [self.candidate(i, now=now, last=last, earliest=restriction.earliest) for i in range(count)]
        due = [(i, t) for i, (t, is_due) in enumerate(candidates) if is_due]
        if due:
            # Round robin from the schedule after the one that fired last (the last run's microsecond): when
            # runs queue up behind max_active_runs, every schedule still gets its turn.
            after = last.microsecond if last is not None and last.microsecond < count else -1
            _, fire = min(due, key=lambda d: (d[0] - after - 1) % count)
        else:
            fire = min(t for t, _ in candidates)
        if restriction.latest is not None and fire > restriction.latest:
            return None
        return DagRunInfo.interval(_pendulum(fire), _pendulum(fire))

    def schedule_at(self, run_after: datetime.datetime) -> dict[str, Any] | None:
        """The schedule that fires at `run_after`: its index is the microsecond shift, its cron must match."""
        found = schedule_at(self.schedules, run_after)
        return dict(found) if found is not None else None

    def generate_run_id(
        self, *, run_type: DagRunType, run_after: DateTime, data_interval: DataInterval | None, **extra: Any
    ) -> str:
        if str(run_type) != "scheduled":
            return super().generate_run_id(run_type=run_type, run_after=run_after, data_interval=data_interval)
        schedule = self.schedule_at(run_after)
        if schedule is None:
            # A run this version's schedules do not explain (Airflow computed it from another version of the
            # DAG): Airflow's `scheduled__<time>` would repeat across DAGs, so the DAG is named too. Its
            # schedule is found from the logical date when it runs (parameters_for).
            return f"{RUN_ID_PREFIX}{run_after.isoformat()}__{dag_tag(self.dag_id)}"
        return f"{RUN_ID_PREFIX}{schedule['id']}__{run_after.replace(microsecond=0).isoformat()}"

    def parameters_for(
        self, run_id: str | None, logical_date: datetime.datetime | None = None
    ) -> dict[str, Any] | None:
        """The parameters of the schedule that started a run: named by its run id or, for a run whose id was
        made while the scheduler still held the DAG's previous version, found from its logical date."""
        schedule_id = schedule_id_of(run_id)
        for s in self.schedules:
            if s["id"] == schedule_id:
                return dict(s["parameters"])
        found = self.schedule_at(logical_date) if schedule_id is None and logical_date is not None else None
        return found["parameters"] if found else None


def dag_tag(dag_id: str) -> str:
    """A short token unique per DAG, for run ids."""
    import hashlib

    return "dag-" + hashlib.sha1(dag_id.encode()).hexdigest()[:8]


def schedule_parameters(
    dag: Any, run_id: str | None, logical_date: datetime.datetime | None = None
) -> dict[str, Any] | None:
    """The parameters of the schedule that started run `run_id` of `dag`, or None (not a schedule's run)."""
    timetable = getattr(dag, "timetable", None)
    timetable = getattr(timetable, "timetable", timetable)  # a data-scheduled DAG's: inside AssetOrTimeSchedule
    if not (run_id or "").startswith(RUN_ID_PREFIX) or not isinstance(timetable, ScheduleSetTimetable):
        return None
    return timetable.parameters_for(run_id, logical_date)
