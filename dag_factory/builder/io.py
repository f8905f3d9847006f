"""Tasks of the file, s3 and http sources and of the file and s3 sinks.

Each factory takes (dataset or sink name, the step's model, conn: connection name -> Airflow conn_id, the
staging conn_id, the task's arguments) and returns the operator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dag_factory.operators import StageHttpOperator, StageObjectsOperator, WriteObjectsOperator
from dag_factory.spec.models import FileSink, FileSource, HttpSource, ObjectSink, S3Sink, S3Source
from dag_factory.spec.task_ids import sink_task, source_task

# Connection name (as the definition writes it) -> Airflow conn_id.
Conn = Callable[[str], str]
ObjectSource = FileSource | S3Source | HttpSource


def object_source_task(name: str, src: ObjectSource, conn: Conn, staging: str, args: dict[str, Any]) -> Any:
    """The task that stages a file, s3 or http source as dataset `name`."""
    match src:
        case FileSource():
            return _file_source(name, src, staging, args)
        case S3Source():
            return _s3_source(name, src, conn, staging, args)
        case HttpSource():
            return _http_source(name, src, conn, staging, args)


def _file_source(name: str, src: FileSource, staging: str, args: dict[str, Any]) -> Any:
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


def _s3_source(name: str, src: S3Source, conn: Conn, staging: str, args: dict[str, Any]) -> Any:
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


def _http_source(name: str, src: HttpSource, conn: Conn, staging: str, args: dict[str, Any]) -> Any:
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


def object_sink_task(name: str, sink: ObjectSink, conn: Conn, staging: str, args: dict[str, Any]) -> Any:
    """The task that writes a file or s3 sink's input as files or objects."""
    conn_id: str | None = None
    bucket: str | None = None
    match sink:
        case S3Sink():
            conn_id, bucket, path = conn(sink.connection), sink.bucket, sink.prefix
            where = f"s3://{sink.bucket}/{sink.prefix}"
        case FileSink():
            path, where = sink.path, f"{sink.path} under the tenant's file root"
    parts = f", partitioned by {', '.join(sink.partition_by)}" if sink.partition_by else ""
    return WriteObjectsOperator(
        task_id=sink_task(name),
        store=sink.type,
        conn_id=conn_id,
        bucket=bucket,
        staging_conn_id=staging,
        dataset=sink.input,
        path=path,
        format=sink.format,
        partition_by=sink.partition_by,
        mode=sink.mode,
        doc_md=f"{sink.mode} `{sink.input}` as {sink.format} into `{where}`{parts}.",
        **args,
    )
