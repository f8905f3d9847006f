"""The Airflow plugin of dag_factory (entry point `airflow.plugins` in pyproject.toml): registers the
timetable of pipeline schedules, which Airflow deserializes only for registered classes."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from dag_factory.timetables import ScheduleSetTimetable


class PipelineServicePlugin(AirflowPlugin):
    name = "pipeline_service"
    timetables = [ScheduleSetTimetable]
