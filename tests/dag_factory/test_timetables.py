"""The schedules timetable: fire times per zone (DST), earliest-of-several, no catch-up, run ids naming the
schedule, Airflow's (de)serialization through the registered plugin, and the parameters a scheduled run's
tasks see."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from airflow.sdk.exceptions import AirflowFailException
from airflow.serialization.decoders import decode_timetable
from airflow.serialization.encoders import encode_timetable
from airflow.serialization.serialized_objects import DagSerialization
from airflow.timetables.base import DataInterval, TimeRestriction
from airflow.utils.types import DagRunType

from dag_factory import timetables
from dag_factory.builder.dag import build_dag, load_pipeline_dag
from dag_factory.spec.schedule import cron_error, describe, next_fire, schedule_id_of, timezone_error
from dag_factory.timetables import ScheduleSetTimetable, schedule_parameters

NY = ZoneInfo("America/New_York")
EXAMPLE = json.loads((Path(__file__).resolve().parents[2] / "examples" / "daily-sales-etl.json").read_text())
NO_LIMITS = TimeRestriction(earliest=None, latest=None, catchup=False)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def entry(sid: str, cron: str, tz: str = "UTC", since: datetime | None = None, **params: Any) -> dict[str, Any]:
    return {"id": sid, "cron": cron, "timezone": tz, "parameters": params, "since": since and since.isoformat()}


def next_info(tt: ScheduleSetTimetable, now: datetime, last: datetime | None, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(timetables, "_now", lambda: now)
    interval = DataInterval(last, last) if last else None
    return tt.next_dagrun_info(last_automated_data_interval=interval, restriction=NO_LIMITS)


# -- fire times ---------------------------------------------------------------------------------------------
def test_spring_forward_a_missing_time_fires_an_hour_later_the_next_day_as_usual() -> None:
    # 2026-03-08: New York skips 02:00-03:00. 02:30 does not exist: it fires at 03:30 EDT (07:30 UTC).
    fire = next_fire("30 2 * * *", "America/New_York", utc(2026, 3, 8, 5, 0))
    assert fire == utc(2026, 3, 8, 7, 30)
    assert fire.astimezone(NY).strftime("%H:%M %Z") == "03:30 EDT"
    assert next_fire("30 2 * * *", "America/New_York", fire) == utc(2026, 3, 9, 6, 30)  # 02:30 EDT
    # 06:00 stays 06:00 local across the change: 11:00 UTC before, 10:00 UTC after.
    assert next_fire("0 6 * * *", "America/New_York", utc(2026, 3, 7, 12)) == utc(2026, 3, 8, 10)
    assert next_fire("0 6 * * *", "America/New_York", utc(2026, 3, 6, 12)) == utc(2026, 3, 7, 11)


def test_fall_back_a_repeated_time_fires_once() -> None:
    first = next_fire("30 1 * * *", "America/New_York", utc(2026, 11, 1, 4))
    assert first == utc(2026, 11, 1, 5, 30)  # 01:30 EDT
    assert next_fire("30 1 * * *", "America/New_York", first) == utc(2026, 11, 2, 6, 30)


def test_every_half_hour_neither_skips_nor_repeats_through_fall_back() -> None:
    t, fires = utc(2026, 11, 1, 5, 10), []
    for _ in range(4):
        t = next_fire("*/30 * * * *", "America/New_York", t)
        fires.append(t)
    assert fires == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6), utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 7)]


def test_validation_messages() -> None:
    assert cron_error("0 6 * * *") is None and cron_error("@daily") is None
    assert "out of range" in (cron_error("61 * * * *") or "")
    assert "5 fields" in (cron_error("* * * * * *") or "")
    assert timezone_error("America/New_York") is None and timezone_error("UTC") is None
    assert "unknown time zone" in (timezone_error("Mars/Olympus_Mons") or "")
    assert describe("0 6 * * *") == "At 06:00"


# -- the timetable -----------------------------------------------------------------------------------------
def test_next_run_is_the_earliest_among_the_schedules_each_in_its_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    since = utc(2026, 1, 15, 11, 30)  # created then
    tt = ScheduleSetTimetable(
        [entry("sch-ny", "0 6 * * *", "America/New_York", since), entry("sch-tokyo", "0 6 * * *", "Asia/Tokyo", since)]
    )
    info = next_info(tt, utc(2026, 1, 15, 12), None, monkeypatch)
    assert info.run_after == utc(
        2026,
        1,
        15,
        21,
        0,
        0,
    ) + timedelta(microseconds=1)  # 06:00 JST, 2nd schedule
    info = next_info(tt, utc(2026, 1, 15, 22), info.run_after, monkeypatch)
    assert info.run_after == utc(2026, 1, 16, 11)  # 06:00 EST
    run_id = tt.generate_run_id(run_type=DagRunType.SCHEDULED, run_after=info.run_after, data_interval=None)
    assert run_id == "scheduled__sch-ny__2026-01-16T11:00:00+00:00"
    assert schedule_id_of(run_id) == "sch-ny"


def test_schedules_firing_at_the_same_minute_each_get_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    since = utc(2026, 5, 1, 9, 59, 50)
    tt = ScheduleSetTimetable([entry("sch-a", "* * * * *", since=since), entry("sch-b", "*/2 * * * *", since=since)])
    now, last, ids = utc(2026, 5, 1, 10, 0, 30), None, []
    for _ in range(5):
        info = next_info(tt, now, last, monkeypatch)
        ids.append(tt.generate_run_id(run_type=DagRunType.SCHEDULED, run_after=info.run_after, data_interval=None))
        last, now = info.run_after, max(now, info.run_after)
    assert ids == [
        "scheduled__sch-a__2026-05-01T10:00:00+00:00",  # just passed (the DAG file was parsed late): still runs
        "scheduled__sch-b__2026-05-01T10:00:00+00:00",
        "scheduled__sch-a__2026-05-01T10:01:00+00:00",
        "scheduled__sch-a__2026-05-01T10:02:00+00:00",
        "scheduled__sch-b__2026-05-01T10:02:00+00:00",
    ]
    assert len(set(ids)) == 5


def test_schedules_take_turns_when_runs_queue_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs last 90 s and max_active_runs is 1: two every-minute schedules alternate, neither starves."""
    since = utc(2026, 5, 1, 9, 59, 50)
    tt = ScheduleSetTimetable([entry("sch-a", "* * * * *", since=since), entry("sch-b", "* * * * *", since=since)])
    now, last, fired = utc(2026, 5, 1, 10, 0, 1), None, []
    for _ in range(6):
        info = next_info(tt, now, last, monkeypatch)
        fired.append(tt.schedule_at(info.run_after)["id"])  # type: ignore[index]
        assert last is None or info.run_after > last  # logical dates only grow
        last, now = info.run_after, max(now, info.run_after) + timedelta(seconds=90)
    assert fired == ["sch-a", "sch-b"] * 3


def test_no_catch_up_and_nothing_before_the_schedule_existed(monkeypatch: pytest.MonkeyPatch) -> None:
    since = utc(2026, 5, 1, 10, 0, 40)
    tt = ScheduleSetTimetable([entry("sch-a", "* * * * *", since=since)])
    # Created at 10:00:40: the 10:00 slot is before it, the first run is 10:01.
    assert next_info(tt, utc(2026, 5, 1, 10, 0, 45), None, monkeypatch).run_after == utc(2026, 5, 1, 10, 1)
    # Airflow was down from 10:02 to 13:00: one run for the time just passed, not three hours of them.
    info = next_info(tt, utc(2026, 5, 1, 13, 0, 20), utc(2026, 5, 1, 10, 2), monkeypatch)
    assert info.run_after == utc(2026, 5, 1, 13, 0)
    # A manual (unscheduled) run has no schedule; an unknown time falls back to Airflow's default id.
    assert tt.schedule_at(utc(2026, 5, 1, 13, 0, 30)) is None


def test_end_date_and_no_schedules(monkeypatch: pytest.MonkeyPatch) -> None:
    tt = ScheduleSetTimetable([entry("sch-a", "0 6 * * *", since=utc(2026, 5, 1, 11))])
    monkeypatch.setattr(timetables, "_now", lambda: utc(2026, 5, 1, 12))
    restriction = TimeRestriction(earliest=None, latest=utc(2026, 5, 1, 23), catchup=False)
    assert tt.next_dagrun_info(last_automated_data_interval=None, restriction=restriction) is None
    assert ScheduleSetTimetable([]).next_dagrun_info(last_automated_data_interval=None, restriction=NO_LIMITS) is None


def test_airflow_serializes_and_deserializes_it_through_the_plugin() -> None:
    tt = ScheduleSetTimetable(
        [entry("sch-a", "0 6 * * *", "America/New_York", utc(2026, 1, 1), lookback_days=1), entry("sch-b", "@hourly")]
    )
    encoded = json.loads(json.dumps(encode_timetable(tt)))
    assert encoded["__type"] == "dag_factory.timetables.ScheduleSetTimetable"
    decoded = decode_timetable(encoded)
    assert isinstance(decoded, ScheduleSetTimetable) and decoded == tt
    assert decoded.serialize() == tt.serialize()
    assert decoded.description == "At 06:00 (America/New_York); Every hour (UTC)"


def _config(schedules: list[dict[str, Any]] | None) -> str:
    definition = EXAMPLE["definition"]
    names = {s["connection"] for g in ("sources", "sinks") for s in definition.get(g, {}).values()}
    cfg = {"dag_id": "t.sched", "definition": definition, "connections": {n: f"t.{n}" for n in names}}
    if schedules is not None:
        cfg["schedules"] = schedules
    return json.dumps(cfg)


def test_a_dag_with_schedules_round_trips_through_dag_serialization() -> None:
    dag = load_pipeline_dag(_config([entry("sch-a", "*/5 * * * *", "Europe/Berlin", start_date="2026-03-01")]))
    assert isinstance(dag.timetable, ScheduleSetTimetable) and dag.catchup is False
    back = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    assert back.timetable == dag.timetable
    assert load_pipeline_dag(_config(None)).timetable.can_be_scheduled is False  # no schedules: manual only
    assert load_pipeline_dag(_config([])).timetable.can_be_scheduled is False


def test_tasks_of_a_scheduled_run_render_with_the_schedules_parameters() -> None:
    dag = build_dag(
        EXAMPLE["definition"],
        dag_id="t.sched",
        connections={"sales-database": "t.sales", "warehouse": "t.wh"},
        schedules=[entry("sch-a", "0 6 * * *", start_date="2026-03-01")],
    )
    source = dag.get_task("sources.raw_transactions")
    defaults = {"start_date": "2026-02-01", "end_date": "2026-02-12"}

    def rendered(run_id: str) -> str:
        task = source.prepare_for_execution()
        task.render_template_fields({"run_id": run_id, "params": dict(defaults)}, dag.get_template_env())
        return str(task.where)

    scheduled = rendered("scheduled__sch-a__2026-11-26T11:00:00+00:00")
    assert "'2026-03-01'" in scheduled and "'2026-02-12'" in scheduled
    assert "'2026-02-01'" in rendered("exec-123")  # not a schedule's run: the run's own parameters
    # A run id made while Airflow's scheduler still held the DAG's previous version: found by logical date.
    legacy = "scheduled__2026-11-26T06:00:00+00:00"
    assert schedule_parameters(dag, legacy, utc(2026, 11, 26, 6)) == {"start_date": "2026-03-01"}
    assert schedule_parameters(dag, legacy, utc(2026, 11, 26, 6, 0, 30)) is None
    assert schedule_parameters(dag, "scheduled__sch-gone__2026-11-26T11:00:00+00:00") is None
    # ...and a run no enabled schedule explains fails rather than run with the defaults.
    for run_id, logical in (("scheduled__sch-gone__2026-11-26T11:00:00+00:00", None), (legacy, utc(2026, 11, 26, 7))):
        task = source.prepare_for_execution()
        context = {"run_id": run_id, "logical_date": logical, "params": dict(defaults)}
        with pytest.raises(AirflowFailException, match="belongs to none of the pipeline's enabled schedules"):
            task.render_template_fields(context, dag.get_template_env())
    task = source.prepare_for_execution()
    task.render_template_fields({"run_id": legacy, "logical_date": utc(2026, 11, 26, 6), "params": dict(defaults)})
    assert "'2026-03-01'" in str(task.where)


def test_run_ids_are_unique_across_dags_even_when_no_schedule_explains_the_run() -> None:
    """Airflow computes the next run from the DAG model and names it with the timetable of the DAG version it
    holds: when that version's schedules do not explain the time, the id still names the DAG, not only the
    time (Airflow's own `scheduled__<time>` repeats across DAGs: one staging schema, one execution id)."""
    one, two = ScheduleSetTimetable([], "t.one"), ScheduleSetTimetable([], "t.two")
    when = utc(2026, 11, 26, 4, 29)
    ids = [tt.generate_run_id(run_type=DagRunType.SCHEDULED, run_after=when, data_interval=None) for tt in (one, two)]
    assert ids[0] != ids[1] and all(i.startswith("scheduled__2026-11-26T04:29:00+00:00__dag-") for i in ids)
    assert all(schedule_id_of(i) is None and len(i) <= 64 for i in ids)  # found by logical date, fits the service
    # No schedules: nothing is scheduled, and Airflow's UI says so.
    assert (one.can_be_scheduled, one.summary) == (False, "None")
    assert ScheduleSetTimetable.deserialize(one.serialize()) == one and one != two
    # With a schedule that explains the time, the id names the schedule as before.
    tt = ScheduleSetTimetable([entry("sch-a", "* * * * *")], "t.one")
    run_id = tt.generate_run_id(run_type=DagRunType.SCHEDULED, run_after=when, data_interval=None)
    assert run_id == "scheduled__sch-a__2026-11-26T04:29:00+00:00" and tt.can_be_scheduled
    assert tt.parameters_for(ids[0], when) == {} and tt.parameters_for(ids[0], when + timedelta(seconds=30)) is None


def test_every_pipeline_dag_carries_the_timetable() -> None:
    dag = build_dag(EXAMPLE["definition"], dag_id="t.manual", connections={"sales-database": "s", "warehouse": "w"})
    assert isinstance(dag.timetable, ScheduleSetTimetable) and dag.timetable.dag_id == "t.manual"
    assert not dag.timetable.schedules
