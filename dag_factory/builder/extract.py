"""Tasks of database sources that are `sql`, incremental or partitioned, and of the watermark commit.

A partitioned source is a TaskGroup `<name>_partitions` (group ids cannot hold dots) holding `sources.<name>.bounds`,
`sources.<name>.part_<i>` and `sources.<name>` (the union). The group stands for the source in the graph:
edges to it land on its roots (bounds), edges from it leave from its leaf (the union).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import TaskGroup

from dag_factory.builder.io import Conn
from dag_factory.operators import (
    WATERMARK_TASK_ID,
    CommitWatermarksOperator,
    ExtractOperator,
    PlanPartitionsOperator,
    UnionPartitionsOperator,
)
from dag_factory.spec.models import DatabaseSource, PipelineDefinition, SqlSink, SqlSource
from dag_factory.spec.task_ids import partition_bounds_task, partition_task, sink_task, source_task


def is_extraction(src: DatabaseSource) -> bool:
    """Sources built here rather than by the plain staging copy."""
    return isinstance(src, SqlSource) or bool(src.incremental or src.partitions)


def _reader_args(name: str, src: DatabaseSource, source_conn: str, staging: str) -> dict[str, Any]:
    return {
        "kind": src.type,
        "source_conn_id": source_conn,
        "staging_conn_id": staging,
        "dataset": name,
        "table": src.table,
        "query": src.query if isinstance(src, SqlSource) else None,
        "where": src.where,
        "incremental": src.incremental.model_dump() if src.incremental else None,
    }


def _describe(src: DatabaseSource) -> str:
    what = f"`{src.table}`" if src.table else "a query"
    text = f"Stage {what} from connection `{src.connection}`"
    if src.where:
        text += f" where `{src.where}`"
    if src.incremental:
        text += f"; incremental on `{src.incremental.column}` (rows past the last successful run's mark)"
    return text + "."


def extraction_task(name: str, src: DatabaseSource, source_conn: str, staging: str, args: dict[str, Any]) -> Any:
    """The task (or, partitioned, the TaskGroup) that stages source `name` as dataset `name`."""
    reader = _reader_args(name, src, source_conn, staging)
    batch: dict[str, Any] = {"batch_size": src.batch_size} if isinstance(src, SqlSource) else {}
    if not src.partitions:
        return ExtractOperator(task_id=source_task(name), doc_md=_describe(src), **reader, **batch, **args)
    p, count = src.partitions, src.partitions.size
    column = src.partition_column()
    with TaskGroup(f"{name}_partitions", tooltip=f"{count} partitions of {name}", prefix_group_id=False) as group:
        plan = PlanPartitionsOperator(
            task_id=partition_bounds_task(name),
            column=column,
            count=count,
            bounds=p.bounds,
            doc_md=f"Key ranges of `{column or 'the primary key'}` for {count} partitions; reads the mark once.",
            **reader,
            **args,
        )
        parts = [
            ExtractOperator(
                task_id=partition_task(name, i),
                partition={"index": i, "count": count, "plan_task_id": plan.task_id},
                doc_md=f"Partition {i + 1} of {count}. " + _describe(src),
                **reader,
                **batch,
                **args,
            )
            for i in range(count)
        ]
        union = UnionPartitionsOperator(
            task_id=source_task(name),
            staging_conn_id=staging,
            dataset=name,
            count=count,
            incremental_column=src.incremental.column if src.incremental else None,
            doc_md=f"`{name}` = the union of its {count} partitions (a view).",
            **args,
        )
        plan >> parts >> union
    return group


def watermark_task(definition: PipelineDefinition, staging: str, common: dict[str, Any]) -> Any:
    """`commit_watermarks`, when a source is incremental: saves the marks once sinks and checks passed."""
    sources = {
        n: s.incremental.column
        for n, s in definition.sources.items()
        if isinstance(s, DatabaseSource) and s.incremental is not None
    }
    if not sources:
        return None
    return CommitWatermarksOperator(
        task_id=WATERMARK_TASK_ID,
        staging_conn_id=staging,
        sources=sources,
        doc_md="Saves the high-water marks of the incremental sources: runs only when every sink and check passed.",
        **{**common, "execution_timeout": common.get("execution_timeout") or timedelta(minutes=10)},
    )


def sql_sink_task(name: str, sink: SqlSink, conn: Conn, staging: str, args: dict[str, Any]) -> Any:
    from dag_factory.operators import SqlLoadOperator

    return SqlLoadOperator(
        task_id=sink_task(name),
        staging_conn_id=staging,
        sink_conn_id=conn(sink.connection),
        dataset=sink.input,
        table=sink.table,
        mode=sink.mode,
        keys=sink.keys,
        batch_size=sink.batch_size,
        doc_md=f"{sink.mode} `{sink.input}` into `{sink.table}` on connection `{sink.connection}` (sql).",
        **args,
    )
