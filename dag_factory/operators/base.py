"""Common base of the pipeline operators: cancellation, and lineage for OpenLineage."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException
from jinja2 import TemplateError

from dag_factory.hooks.postgres import PostgresHook, cancel_open_queries, split_table
from dag_factory.spec.templating import RUN_NAMES, TIME_NAMES, render, template_context

# (conn_id, table) read by a task; one written also carries its rows and bytes (None: not known).
TableRef = tuple[str, str | tuple[str, str]]
Written = tuple[str, str | tuple[str, str], int | None, int | None]


class PipelineOperator(BaseOperator):
    """Cancels its in-flight SQL when Airflow kills the task (a cancelled run, a timeout), and reports the
    tables it read and wrote (with the rows written) to OpenLineage when the task completes.

    execute() calls `self.record_lineage(...)`; the openlineage provider calls
    get_openlineage_facets_on_complete() afterwards, in the same process.

    Its template fields hold user text: they are rendered with dag_factory.spec.templating's restricted
    environment (params and the run's time values only), never with Airflow's template context.
    """

    _lineage: tuple[Sequence[TableRef], Sequence[Written]] | None = None
    _named_outputs: tuple[tuple[str, str, int | None, int | None], ...] = ()

    def on_kill(self) -> None:
        cancel_open_queries()

    def staging_conn(self) -> str | None:
        """The connection whose staging schema this task reads or fills (None: it touches none)."""
        return self.__dict__.get("staging_conn_id")

    def pre_execute(self, context: Any) -> None:
        # Any task working on staged data first makes sure the staging database did not restart mid-run.
        conn_id = self.staging_conn()
        if conn_id and context.get("run_id"):
            from dag_factory.operators.staging import assert_staging_intact, run_schema

            assert_staging_intact(conn_id, run_schema(context))

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        # A run started by a schedule carries that schedule's parameters ({{ params.x }} and execute()
        # see them): the run id names the schedule (dag_factory.timetables). Cheap for any other run.
        run_id = context.get("run_id") or ""
        if run_id.startswith("scheduled__"):
            from dag_factory.timetables import schedule_parameters

            extra = schedule_parameters(self.dag, run_id, context.get("logical_date"))
            if extra is None:  # never run a schedule's run with the defaults instead of its parameters
                raise AirflowFailException(
                    f"scheduled run {run_id} belongs to none of the pipeline's enabled schedules (changed or removed "
                    "since Airflow queued it): its parameters are unknown, so it does not run"
                )
            context["params"].update(extra)
        self.render_user_templates(context)

    def render_user_templates(self, context: Any) -> None:
        """Render the template fields (user text) with the restricted environment of
        dag_factory.spec.templating, never with Airflow's (`jinja_env` and Airflow's context are ignored):
        Airflow's context reaches every tenant's connections, variables and XComs. A template it refuses
        fails the task without retries: it would be refused again."""
        values = template_context(context.get("params") or {}, run_values(context))
        for field in self.template_fields:
            value = getattr(self, field, None)
            if value is None:
                continue
            try:
                rendered = render(value, values)
            except TemplateError as exc:
                raise AirflowFailException(f"{self.task_id}: template of {field!r} refused: {exc}") from None
            setattr(self, field, rendered)

    def record_lineage(self, inputs: Sequence[TableRef], outputs: Sequence[Written]) -> None:
        # object.__setattr__: BaseOperator's __setattr__ bookkeeping is for constructor arguments.
        object.__setattr__(self, "_lineage", (inputs, outputs))

    def record_named_outputs(self, outputs: Sequence[tuple[str, str, int | None, int | None]]) -> None:
        """Outputs already named (namespace, name, rows, bytes): tables of databases other than PostgreSQL."""
        object.__setattr__(self, "_named_outputs", tuple(outputs))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import InputDataset

        inputs, outputs = self._lineage or ([], [])
        named = [(*dataset_name(conn_id, table), rows, size) for conn_id, table, rows, size in outputs]
        return OperatorLineage(
            inputs=[InputDataset(*dataset_name(conn_id, table)) for conn_id, table in inputs],
            outputs=[output_dataset(*out) for out in [*named, *self._named_outputs]],
        )


def output_dataset(namespace: str, name: str, rows: int | None, size: int | None) -> Any:
    """An OpenLineage output dataset, with its output statistics when the rows are known."""
    from openlineage.client.event_v2 import OutputDataset
    from openlineage.client.facet_v2 import output_statistics_output_dataset as stats

    facets: dict[str, Any] = (
        {"outputStatistics": stats.OutputStatisticsOutputDatasetFacet(rowCount=rows, size=size)}
        if rows is not None and rows >= 0
        else {}
    )
    return OutputDataset(namespace, name, outputFacets=facets)


def run_values(context: Any) -> dict[str, Any]:
    """The run's time values and identity from Airflow's context, as text (see spec.templating): the dag id
    read off the DAG here, so that templates never get the DAG object itself."""
    values = {name: context.get(name) for name in (*TIME_NAMES, *RUN_NAMES) if context.get(name) is not None}
    dag = context.get("dag")
    if "dag_id" not in values and dag is not None:
        values["dag_id"] = dag.dag_id
    return values


# -- a faster BaseOperator.__setattr__, same behaviour ---------------------------------------------------
# BaseOperator.__setattr__ runs on each of the ~65 attribute assignments of a task's construction and looks
# its converter up by name every time (`getattr(self, f"_convert_{key}", None)`, a miss through the whole
# class hierarchy for all but six keys): about a seventh of the time a small pipeline's DAG takes to build.
# `_setattr` does exactly what Airflow's does, step by step, with the converter lookup remembered per
# (class, key) (a class's methods do not change while DAG files are parsed). It mirrors one version of
# Airflow's method: installed only when Airflow's bytecode is that version's (sha256 below, Airflow 3.3.2 on
# Python 3.11); with any other Airflow the operators simply keep Airflow's own __setattr__.
# tests/dag_factory/test_operator_setattr.py checks that it is installed and that DAGs come out identical.
AIRFLOW_SETATTR_SHA256 = "8f010ab054044cc9e9b2a5d7dd25ca28be490f5faf0061486e71acf47b4c0678"
_has_converter: dict[tuple[type, str], bool] = {}


def _setattr(self: BaseOperator, key: str, value: Any) -> None:
    cls = type(self)
    has = _has_converter.get((cls, key))
    if has is None:
        has = _has_converter[cls, key] = getattr(cls, f"_convert_{key}", None) is not None
    if has:
        value = getattr(self, f"_convert_{key}")(value)
    object.__setattr__(self, key, value)  # what super().__setattr__ resolves to from BaseOperator
    if self._BaseOperator__from_mapped or self._lock_for_execution:  # type: ignore[attr-defined]
        return
    init_kwargs = self._BaseOperator__init_kwargs  # type: ignore[attr-defined]
    if key in init_kwargs:
        init_kwargs[key] = value
    if self._BaseOperator__instantiated and key in self.template_fields:  # type: ignore[attr-defined]
        self._set_xcomargs_dependency(key, value)


def airflow_setattr_mirrored() -> bool:
    return hashlib.sha256(BaseOperator.__setattr__.__code__.co_code).hexdigest() == AIRFLOW_SETATTR_SHA256


if airflow_setattr_mirrored():
    PipelineOperator.__setattr__ = _setattr  # type: ignore[method-assign]


def dataset_name(conn_id: str, table: str | tuple[str, str]) -> tuple[str, str]:
    """OpenLineage's naming for PostgreSQL: namespace `postgres://host:port`, name `database.schema.table`."""
    c = PostgresHook(conn_id)._airflow_connection()
    schema, name = split_table(table)
    return f"postgres://{c.host or 'localhost'}:{c.port or 5432}", f"{c.schema}.{schema}.{name}"
