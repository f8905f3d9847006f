"""Common base of the pipeline operators."""

from __future__ import annotations

from airflow.sdk import BaseOperator

from dag_factory.hooks.postgres import cancel_open_queries


class PipelineOperator(BaseOperator):
    """Cancels its in-flight SQL when Airflow kills the task (a cancelled run, a timeout)."""

    def on_kill(self) -> None:
        cancel_open_queries()
