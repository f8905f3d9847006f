"""Files and S3 objects in and out of the run's staging schema, and HTTP APIs in.

- StageObjectsOperator: files (under the file root) or S3 objects matching a glob -> `<staging schema>.<dataset>`
  (pyarrow reads CSV / JSON lines / Parquet; the table is created from the Arrow schema and loaded with COPY).
- StageHttpOperator: the JSON records of an API (every page) -> `<staging schema>.<dataset>`.
- WriteObjectsOperator: `<staging schema>.<dataset>` -> CSV or Parquet files, hive-partitioned if asked.

Lineage names follow OpenLineage: namespace `file` (name: the absolute path), `s3://bucket` (name: the key or
prefix), `https://host:port` (name: the path); staging tables keep the PostgreSQL naming of the other operators.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

from airflow.sdk.exceptions import AirflowFailException

from dag_factory.exceptions import DagFactoryError
from dag_factory.hooks.postgres import PostgresHook
from dag_factory.operators.base import PipelineOperator, dataset_name, output_dataset
from dag_factory.operators.staging import run_schema

# (namespace, name) and, for outputs, (namespace, name, rows, bytes).
Named = tuple[str, str]
NamedOut = tuple[str, str, int | None, int | None]


def run_dag_id(context: Any) -> str:
    """The id of the DAG the task runs in, as Airflow's task instance carries it (the scheduler's record,
    not anything the definition sets)."""
    return getattr(context.get("ti"), "dag_id", None) or getattr(context.get("dag"), "dag_id", None) or ""


def make_store(kind: str, conn_id: str | None, bucket: str | None, context: Any) -> Any:
    """The store of the run: for files its tenant's own root, for s3 the bucket through the tenant's connection."""
    from dag_factory.hooks.objects import LocalStore, S3Store, tenant_of, tenant_root

    try:
        if kind == "file":
            return LocalStore(tenant_root(tenant_of(run_dag_id(context))))
        if kind == "s3" and conn_id and bucket:
            return S3Store.from_connection(conn_id, bucket)
    except DagFactoryError as exc:
        raise AirflowFailException(str(exc)) from None
    raise AirflowFailException(f"unknown object store {kind!r} (or missing connection/bucket)")


class ObjectLineageOperator(PipelineOperator):
    """Reports (namespace, name) datasets to OpenLineage, with rows and bytes on the outputs."""

    _named: tuple[list[Named], list[NamedOut]] | None = None

    def record_named_lineage(self, inputs: list[Named], outputs: list[NamedOut]) -> None:
        object.__setattr__(self, "_named", (inputs, outputs))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import InputDataset

        inputs, outputs = self._named or ([], [])
        return OperatorLineage(
            inputs=[InputDataset(ns, name) for ns, name in inputs],
            outputs=[output_dataset(*out) for out in outputs],
        )


class StageObjectsOperator(ObjectLineageOperator):
    """Stages every file/object under `path` matching `glob` as `<staging schema>.<dataset>`."""

    template_fields: Sequence[str] = ("path", "glob")

    def __init__(
        self,
        *,
        store: str,
        staging_conn_id: str,
        dataset: str,
        path: str,
        glob: str = "*",
        format: str,
        delimiter: str = ",",
        conn_id: str | None = None,
        bucket: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.store = store
        self.staging_conn_id = staging_conn_id
        self.dataset = dataset
        self.path = path
        self.glob = glob
        self.format = format
        self.delimiter = delimiter
        self.conn_id = conn_id
        self.bucket = bucket

    def execute(self, context: Any) -> dict[str, Any]:
        from dag_factory.hooks.objects import load_arrow, matching, read_objects

        target = (run_schema(context), self.dataset)
        store = make_store(self.store, self.conn_id, self.bucket, context)
        try:
            keys = matching(store, self.path, self.glob)
            if not keys:
                raise AirflowFailException(f"no {self.store} object under {self.path!r} matches {self.glob!r}")
            self.log.info("reading %s %s file(s): %s", len(keys), self.format, ", ".join(keys[:20]))
            table, size = read_objects(store, keys, self.format, delimiter=self.delimiter)
        except DagFactoryError as exc:
            raise AirflowFailException(str(exc)) from None
        rows = load_arrow(PostgresHook(self.staging_conn_id), target, table)
        self.record_named_lineage(
            [store.lineage(k) for k in keys], [(*dataset_name(self.staging_conn_id, target), rows, None)]
        )
        self.log.info("staged %s rows (%s bytes of %s) as %s.%s", rows, size, self.format, *target)
        return {"dataset": self.dataset, "rows": rows, "files": len(keys), "bytes": size}


class WriteObjectsOperator(ObjectLineageOperator):
    """Writes `<staging schema>.<dataset>` as CSV or Parquet files under `path` (see hooks.objects.write_dataset)."""

    template_fields: Sequence[str] = ("path",)

    def __init__(
        self,
        *,
        store: str,
        staging_conn_id: str,
        dataset: str,
        path: str,
        format: str = "parquet",
        partition_by: list[str] | None = None,
        mode: str = "overwrite",
        conn_id: str | None = None,
        bucket: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.store = store
        self.staging_conn_id = staging_conn_id
        self.dataset = dataset
        self.path = path
        self.format = format
        self.partition_by = partition_by or []
        self.mode = mode
        self.conn_id = conn_id
        self.bucket = bucket

    def execute(self, context: Any) -> dict[str, Any]:
        from dag_factory.hooks.objects import fetch_arrow, run_tag, write_dataset

        staged = (run_schema(context), self.dataset)
        store = make_store(self.store, self.conn_id, self.bucket, context)
        table = fetch_arrow(PostgresHook(self.staging_conn_id), staged)
        try:
            keys, size = write_dataset(
                store,
                self.path,
                table,
                fmt=self.format,
                partition_by=self.partition_by,
                mode=self.mode,
                tag=run_tag(context["run_id"]),
            )
        except DagFactoryError as exc:
            raise AirflowFailException(str(exc)) from None
        target = store.lineage(self.path.rstrip("/"))
        self.record_named_lineage([dataset_name(self.staging_conn_id, staged)], [(*target, table.num_rows, size)])
        self.log.info(
            "%s: wrote %s rows in %s file(s), %s bytes, under %s", self.mode, table.num_rows, len(keys), size, target[1]
        )
        return {"rows": table.num_rows, "files": len(keys), "bytes": size}


class StageHttpOperator(ObjectLineageOperator):
    """Stages the JSON records of `path` on an http connection (every page) as `<staging schema>.<dataset>`."""

    template_fields: Sequence[str] = ("path", "params_")

    def __init__(
        self,
        *,
        conn_id: str,
        staging_conn_id: str,
        dataset: str,
        path: str = "/",
        params_: dict[str, Any] | None = None,
        records_path: str = "",
        pagination: dict[str, Any] | None = None,
        max_pages: int = 100,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.staging_conn_id = staging_conn_id
        self.dataset = dataset
        self.path = path
        self.params_ = params_ or {}  # `params` is taken: BaseOperator's run parameters
        self.records_path = records_path
        self.pagination = pagination
        self.max_pages = max_pages

    def execute(self, context: Any) -> dict[str, Any]:
        from dag_factory.hooks.http_api import fetch_records, records_table, session_for
        from dag_factory.hooks.objects import load_arrow

        session, base_url, options = session_for(self.conn_id)
        try:
            fetched = fetch_records(
                session,
                base_url,
                self.path,
                params=self.params_,
                records_path=self.records_path,
                pagination=self.pagination,
                max_pages=self.max_pages,
                request_options=options,
            )
        except DagFactoryError as exc:
            raise AirflowFailException(str(exc)) from None
        finally:
            session.close()
        if not fetched.records:
            raise AirflowFailException(f"GET {self.path}: no records at {self.records_path or 'the top level'!r}")
        table = records_table(fetched.records)
        target = (run_schema(context), self.dataset)
        staging = PostgresHook(self.staging_conn_id)
        rows = load_arrow(staging, target, table)
        url = urlsplit(urljoin(base_url.rstrip("/") + "/", self.path.lstrip("/")))
        source = (f"{url.scheme}://{url.netloc}", url.path)
        staged = (*dataset_name(self.staging_conn_id, target), rows, staging.table_bytes(target))
        self.record_named_lineage([source], [staged])
        self.log.info(
            "staged %s records from %s page(s) (%s bytes) as %s.%s", rows, fetched.pages, fetched.bytes, *target
        )
        return {"dataset": self.dataset, "rows": rows, "pages": fetched.pages, "bytes": fetched.bytes}
