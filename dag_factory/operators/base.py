"""Common base of the pipeline operators: cancellation, and lineage for OpenLineage."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from dag_factory.hooks.postgres import PostgresHook, cancel_open_queries, split_table

# (conn_id, table) read or written by a task; a written one also carries its row count.
TableRef = tuple[str, str | tuple[str, str]]


class PipelineOperator(BaseOperator):
    """Cancels its in-flight SQL when Airflow kills the task (a cancelled run, a timeout), and reports the
    tables it read and wrote (with the rows written) to OpenLineage when the task completes.

    execute() calls `self.record_lineage(...)`; the openlineage provider calls
    get_openlineage_facets_on_complete() afterwards, in the same process.
    """

    _lineage: tuple[list[TableRef], list[tuple[str, str | tuple[str, str], int | None]]] | None = None

    def on_kill(self) -> None:
        cancel_open_queries()

    def record_lineage(
        self, inputs: list[TableRef], outputs: list[tuple[str, str | tuple[str, str], int | None]]
    ) -> None:
        # object.__setattr__: BaseOperator's __setattr__ bookkeeping is for constructor arguments.
        object.__setattr__(self, "_lineage", (inputs, outputs))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import InputDataset, OutputDataset
        from openlineage.client.facet_v2 import output_statistics_output_dataset as stats

        inputs, outputs = self._lineage or ([], [])
        return OperatorLineage(
            inputs=[InputDataset(*dataset_name(conn_id, table)) for conn_id, table in inputs],
            outputs=[
                OutputDataset(
                    *dataset_name(conn_id, table),
                    outputFacets={"outputStatistics": stats.OutputStatisticsOutputDatasetFacet(rowCount=rows)}
                    if rows is not None and rows >= 0
                    else {},
                )
                for conn_id, table, rows in outputs
            ],
        )


def dataset_name(conn_id: str, table: str | tuple[str, str]) -> tuple[str, str]:
    """OpenLineage's naming for PostgreSQL: namespace `postgres://host:port`, name `database.schema.table`."""
    c = PostgresHook(conn_id)._airflow_connection()
    schema, name = split_table(table)
    return f"postgres://{c.host or 'localhost'}:{c.port or 5432}", f"{c.schema}.{schema}.{name}"
