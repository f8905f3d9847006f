"""The datasets a definition reads and writes, named the way OpenLineage names them and the way the
operators report them at run time (dag_factory.operators.base.dataset_name, the object stores' `lineage`),
plus the Airflow asset URI of each. Imports no Airflow: the service names datasets before any run (lineage
of a definition, asset-triggered schedules) and the builder declares inlets and outlets with the same names.

Naming (OpenLineage's dataset naming spec):
- a table: namespace `postgres://host:port` (any SQL database: its URL scheme), name `database.schema.table`
- a file under the tenant's file root: namespace `file`, name the absolute path
- S3 objects: namespace `s3://bucket`, name the key prefix
- an HTTP API: namespace `https://host:port`, name the path
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from dag_factory.spec.models import (
    FileSink,
    FileSource,
    HttpSource,
    PipelineDefinition,
    PostgresSink,
    PostgresSource,
    S3Sink,
    S3Source,
    SqlSink,
    SqlSource,
)

DatasetKind = Literal["TABLE", "FILE", "API"]
DEFAULT_PORTS = {"postgres": 5432, "postgresql": 5432, "mysql": 3306, "mssql": 1433, "https": 443, "http": 80}


@dataclass(frozen=True)
class Endpoint:
    """Where a connection points, without credentials: enough to name its datasets."""

    scheme: str  # postgres, mysql, s3, https, ... (a postgres connection: `postgres`)
    host: str | None = None
    port: int | None = None
    database: str | None = None

    def namespace(self) -> str:
        host = self.host or "localhost"
        port = self.port or DEFAULT_PORTS.get(self.scheme)
        return f"{self.scheme}://{host}:{port}" if port else f"{self.scheme}://{host}"


@dataclass(frozen=True)
class Dataset:
    kind: DatasetKind
    namespace: str
    name: str

    @property
    def fqn(self) -> str:
        """A table's `database.schema.table`; a file's absolute path; an object prefix or API path with its
        namespace (`s3://bucket/prefix`)."""
        if self.kind == "TABLE" or self.namespace == "file":
            return self.name
        return f"{self.namespace}/{self.name.lstrip('/')}"

    @property
    def asset_uri(self) -> str:
        """The Airflow asset URI: `postgres://host:port/database/schema/table`, `file:///path`, `s3://bucket/key`."""
        if self.kind == "TABLE":
            return f"{self.namespace}/{self.name.replace('.', '/')}"
        if self.namespace == "file":
            return "file://" + self.name
        return f"{self.namespace}/{self.name.lstrip('/')}"


def table_dataset(endpoint: Endpoint, table: str) -> Dataset:
    schema, dot, name = table.partition(".")
    schema, name = (schema, name) if dot else ("public", schema)
    return Dataset("TABLE", endpoint.namespace(), f"{endpoint.database}.{schema}.{name}")


def file_dataset(file_root: str, tenant: str, path: str) -> Dataset:
    return Dataset("FILE", "file", posixpath.normpath(posixpath.join(file_root, tenant, path)))


@dataclass(frozen=True)
class DefinitionDatasets:
    sources: dict[str, Dataset]  # by source name; a sql source with a query instead of a table has none
    sinks: dict[str, Dataset]  # by sink name


def definition_datasets(
    definition: PipelineDefinition, endpoints: Mapping[str, Endpoint], *, tenant: str, file_root: str
) -> DefinitionDatasets:
    """The datasets of a definition's sources and sinks. `endpoints`: connection name -> Endpoint; a step
    whose connection is missing from it is left out (it cannot be named)."""
    sources: dict[str, Dataset] = {}
    for name, source in definition.sources.items():
        if (dataset := _source_dataset(source, endpoints, tenant, file_root)) is not None:
            sources[name] = dataset
    sinks: dict[str, Dataset] = {}
    for name, sink in definition.sinks.items():
        if (dataset := _sink_dataset(sink, endpoints, tenant, file_root)) is not None:
            sinks[name] = dataset
    return DefinitionDatasets(sources, sinks)


def _source_dataset(
    source: PostgresSource | SqlSource | FileSource | S3Source | HttpSource,
    endpoints: Mapping[str, Endpoint],
    tenant: str,
    file_root: str,
) -> Dataset | None:
    match source:
        case FileSource():
            return file_dataset(file_root, tenant, source.path)
        case S3Source():
            return Dataset("FILE", f"s3://{source.bucket}", source.prefix.rstrip("/"))
        case HttpSource():
            endpoint = endpoints.get(source.connection)
            return None if endpoint is None else Dataset("API", endpoint.namespace(), source.path)
        case PostgresSource() | SqlSource():
            endpoint = endpoints.get(source.connection)
            if endpoint is None or source.table is None:
                return None
            return table_dataset(endpoint, source.table)
    return None


def _sink_dataset(
    sink: PostgresSink | SqlSink | FileSink | S3Sink, endpoints: Mapping[str, Endpoint], tenant: str, file_root: str
) -> Dataset | None:
    match sink:
        case FileSink():
            return file_dataset(file_root, tenant, sink.path.rstrip("/"))
        case S3Sink():
            return Dataset("FILE", f"s3://{sink.bucket}", sink.prefix.rstrip("/"))
        case PostgresSink() | SqlSink():
            endpoint = endpoints.get(sink.connection)
            return None if endpoint is None else table_dataset(endpoint, sink.table)
    return None


def query_tables(query: str) -> list[str]:
    """The tables (`schema.table`, `public` by default) a source's query reads: the parser's input tables and
    the origins of its column lineage (which also sees the tables inside a WITH, that the former omits)."""
    import openlineage_sql  # a compiled parser, no Airflow

    from dag_factory.spec.sqlcheck import without_jinja

    result = openlineage_sql.parse([without_jinja(query)], dialect="postgres", default_schema="public")
    tables = [f"{t.schema or 'public'}.{t.name}" for t in result.in_tables]
    for item in result.column_lineage:
        tables += [f"{c.origin.schema or 'public'}.{c.origin.name}" for c in item.lineage if c.origin is not None]
    return list(dict.fromkeys(tables))


def query_datasets(definition: PipelineDefinition, endpoints: Mapping[str, Endpoint]) -> dict[str, list[Dataset]]:
    """The tables each database source with a `query` (not a `table`) reads, by source name, named as
    `definition_datasets` names tables: the operators report no dataset for a query (it has no one table)."""
    out: dict[str, list[Dataset]] = {}
    for name, source in definition.sources.items():
        if isinstance(source, SqlSource) and source.query is not None:
            endpoint = endpoints.get(source.connection)
            if endpoint is not None:
                out[name] = [table_dataset(endpoint, table) for table in query_tables(source.query)]
    return out


@dataclass(frozen=True)
class TenantAsset:
    """A dataset as one tenant's Airflow asset. Airflow's assets are global (one `asset` table for every DAG),
    and among its active assets each name and each URI is unique (AssetActive's two unique indexes; a second
    asset with a taken URI stays inactive, out of the Assets view, with a DAG warning). So both carry the
    tenant: the name `<tenant>:<dataset>`, the URI the dataset's asset URI with `?tenant=<tenant>` (a query
    Airflow's URI normalisers keep, and that the OpenLineage conversion of an asset ignores). Tenant A's
    write of a table is then an event on A's asset only: it never triggers B's DAG scheduled on the same
    table."""

    name: str
    uri: str

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "uri": self.uri}


def tenant_asset(dataset: Dataset, tenant: str) -> TenantAsset:
    # A table's name says where it lives (namespace) too: two hosts may hold the same database.schema.table.
    label = f"{dataset.namespace}/{dataset.name}" if dataset.kind == "TABLE" else dataset.fqn
    return TenantAsset(f"{tenant}:{label}", f"{dataset.asset_uri}?tenant={tenant}")
