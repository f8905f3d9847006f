"""Tasks of the file, s3 and http sources and of the file and s3 sinks (dag.py dispatches on `type` here).

Each factory takes (dataset or sink name, the step's model, conn: connection name -> Airflow conn_id, the
staging conn_id, the task's arguments) and returns the operator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dag_factory.operators import StageHttpOperator, StageObjectsOperator, WriteObjectsOperator
from dag_factory.spec.models import FileSink, FileSource, HttpSource, S3Sink, S3Source
from dag_factory.spec.task_ids import sink_task, source_task

Factory = Callable[[str, Any, Callable[[str], str], str, dict[str, Any]], Any]


def _file_source(name: str, src: FileSource, conn: Callable[[str], str], staging: str, args: dict) -> Any:
    return StageObjectsOperator(
        task_id=source_task(name),
        store="file",
        staging_conn_id=staging,
        dataset=name,
        path=src.path,
        glob=src.glob,
        format=src.format,
        delimiter=src.delimiter,
        doc_md=f"Stage {src.format} files `{src.path}/{src.glob}` under the tenant's file root.",
        **args,
    )


def _s3_source(name: str, src: S3Source, conn: Callable[[str], str], staging: str, args: dict) -> Any:
    return StageObjectsOperator(
        task_id=source_task(name),
        store="s3",
        conn_id=conn(src.connection),
        bucket=src.bucket,
        staging_conn_id=staging,
        dataset=name,
        path=src.prefix,
        glob=src.glob,
        format=src.format,
        delimiter=src.delimiter,
        doc_md=f"Stage {src.format} objects `s3://{src.bucket}/{src.prefix}` matching `{src.glob}` "
        f"(connection `{src.connection}`).",
        **args,
    )


def _http_source(name: str, src: HttpSource, conn: Callable[[str], str], staging: str, args: dict) -> Any:
    pagination = src.pagination.model_dump() if src.pagination else None
    return StageHttpOperator(
        task_id=source_task(name),
        conn_id=conn(src.connection),
        staging_conn_id=staging,
        dataset=name,
        path=src.path,
        params_=dict(src.params),
        records_path=src.records_path,
        pagination=pagination,
        max_pages=src.max_pages,
        doc_md=f"Stage the JSON records of `GET {src.path}` (connection `{src.connection}`, "
        f"pagination {pagination['type'] if pagination else 'none'}, at most {src.max_pages} pages).",
        **args,
    )


def _object_sink(name: str, sink: FileSink | S3Sink, conn: Callable[[str], str], staging: str, args: dict) -> Any:
    s3 = isinstance(sink, S3Sink)
    where = (
        f"s3://{sink.bucket}/{sink.prefix}" if isinstance(sink, S3Sink) else f"{sink.path} under the tenant's file root"
    )
    parts = f", partitioned by {', '.join(sink.partition_by)}" if sink.partition_by else ""
    return WriteObjectsOperator(
        task_id=sink_task(name),
        store=sink.type,
        conn_id=conn(sink.connection) if isinstance(sink, S3Sink) else None,
        bucket=sink.bucket if isinstance(sink, S3Sink) else None,
        staging_conn_id=staging,
        dataset=sink.input,
        path=sink.prefix if s3 else sink.path,  # type: ignore[union-attr]
        format=sink.format,
        partition_by=sink.partition_by,
        mode=sink.mode,
        doc_md=f"{sink.mode} `{sink.input}` as {sink.format} into `{where}`{parts}.",
        **args,
    )


SOURCE_TASKS: dict[str, Factory] = {"file": _file_source, "s3": _s3_source, "http": _http_source}
SINK_TASKS: dict[str, Factory] = {"file": _object_sink, "s3": _object_sink}
