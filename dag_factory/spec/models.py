"""Pydantic models of a pipeline definition.

This module is imported by the service to validate input, so it must never import Airflow.
Every model forbids unknown keys: a typo in a definition is an error, not a silently dropped key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

# Dataset names become table names in the per-run staging schema, so they must be plain SQL identifiers.
DatasetName = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")]
# A connection is referenced by its name in the tenant (the service maps it to an Airflow conn_id).
ConnectionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
# `table` or `schema.table`, unquoted identifiers only.
TableName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")]
ColumnName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_$]*$")]
# A PostgreSQL type name as written in a cast: `numeric(10,2)`, `timestamp with time zone`, `text[]`.
# The pattern is what keeps a cast from carrying arbitrary SQL.
SqlType = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_ ]{0,62}(\(\d+(, ?\d+)?\))?(\[\])?$")]
# `package.module.function`: a callable the workers import (only from the allow-list, see python steps).
DottedPath = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")]
StepTimeout = Annotated[int | None, Field(default=None, gt=0, le=7 * 86_400, description="per-task timeout")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParameterSpec(_Strict):
    """A run parameter, declared as a small JSON Schema; becomes an Airflow Param."""

    type: Literal["string", "integer", "number", "boolean", "array", "object"] = "string"
    format: str | None = None
    default: Any = None
    description: str | None = None
    enum: list[Any] | None = None
    minimum: float | None = None
    maximum: float | None = None
    required: bool = False

    def json_schema(self) -> dict[str, Any]:
        keywords = {
            "format": self.format,
            "enum": self.enum,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "description": self.description,
        }
        return {"type": self.type} | {key: value for key, value in keywords.items() if value is not None}


class _Step(_Strict):
    """What every task of the definition can say about its scheduling."""

    depends_on: list[str] = Field(
        default_factory=list, description="steps (dataset or sink names) to wait for besides the data inputs"
    )
    timeout_seconds: StepTimeout = None


# How a dataset is kept in the staging schema. "table" (the default) materialises it: a consistent snapshot,
# counted rows, computed once however many steps read it. "view" (dbt's view materialisation) stores only
# the query, which the next step runs: no extra write of the data, for a dataset read once.
Materialize = Literal["table", "view"]


# -- incremental and partitioned extraction (postgres and sql sources) ---------------------------------
MAX_PARTITIONS = 64
# A value of a key or high-water mark column as JSON gives it: a number, or a string (dates, timestamps).
KeyValue = int | float | str


class Incremental(_Strict):
    """Extract only rows whose `column` is greater than the high-water mark of the last successful run.

    The mark is the largest `column` value staged by that run; it is saved only when the whole run succeeded
    (sinks loaded, error checks passed), so a failed run's rows are extracted again by the next run.
    """

    column: ColumnName
    initial_value: KeyValue | None = Field(
        default=None, description="the first run extracts rows with column > initial_value (default: every row)"
    )


class Partitions(_Strict):
    """Parallel extraction by ranges of `column`: one task per range, the dataset is their union.

    `count`: N ranges of equal width between min and max of the column, computed at run time (numbers,
    dates, timestamps). `bounds`: ascending split points, giving len(bounds)+1 ranges (below the first,
    between each pair, from the last up). NULLs go to the first range: every row is extracted exactly once.
    `column` defaults to `incremental.column`, else the table's single-column primary key (found at run time).
    A bare number (`"partitions": 4`) is short for `{"count": 4}`.
    """

    column: ColumnName | None = None
    count: int | None = Field(default=None, ge=1, le=MAX_PARTITIONS)
    bounds: list[KeyValue] | None = Field(default=None, min_length=1, max_length=MAX_PARTITIONS - 1)

    @model_validator(mode="after")
    def _count_or_bounds(self) -> Partitions:
        if (self.count is None) == (self.bounds is None):
            raise ValueError("give either 'count' (ranges computed at run time) or 'bounds' (split points)")
        if self.bounds is not None:
            strings = [b for b in self.bounds if isinstance(b, str)]
            numbers = [b for b in self.bounds if not isinstance(b, str)]
            if strings and numbers:
                raise ValueError("'bounds' must all be numbers or all be strings")
            if _not_ascending(strings) or _not_ascending(numbers):
                raise ValueError("'bounds' must be strictly ascending")
        return self

    @property
    def size(self) -> int:
        """How many extraction tasks."""
        return self.count if self.count is not None else len(self.bounds or []) + 1


_Ordered = TypeVar("_Ordered", str, float)


def _not_ascending(values: Sequence[_Ordered]) -> bool:
    return any(b >= a for a, b in zip(values[1:], values, strict=False))


def _partitions_shorthand_schema(schema: dict[str, Any]) -> None:
    """The published JSON Schema accepts the bare number too (the model turns it into {count: N})."""
    schema.setdefault("anyOf", []).insert(0, {"type": "integer", "minimum": 1, "maximum": MAX_PARTITIONS})


class _Extracted(_Step):
    """A database source: optionally incremental and/or partitioned."""

    incremental: Incremental | None = None
    partitions: Partitions | None = Field(
        default=None,
        description="{column, count} or {column, bounds}; a bare number N is short for {count: N}",
        json_schema_extra=_partitions_shorthand_schema,
    )

    @field_validator("partitions", mode="before")
    @classmethod
    def _partitions_shorthand(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"count": value}
        return value

    def partition_column(self) -> str | None:
        """The explicit partition column, else the incremental one; None: the primary key, at run time."""
        if self.partitions is None:
            return None
        return self.partitions.column or (self.incremental.column if self.incremental else None)


class PostgresSource(_Extracted):
    type: Literal["postgres"]
    connection: ConnectionName
    table: TableName
    where: str | None = Field(default=None, description="SQL predicate; may use {{ params.x }}")
    materialize: Materialize = Field(default="table", description="view: only when on the staging connection")


class SqlSource(_Extracted):
    """A table (or one SELECT) of any SQLAlchemy-reachable database behind a `jdbc`/`sql` connection, read in
    batches and bulk-loaded (COPY) into the staging schema."""

    type: Literal["sql"]
    connection: ConnectionName
    table: TableName | None = None
    where: str | None = Field(default=None, description="SQL predicate on the table; may use {{ params.x }}")
    query: str | None = Field(default=None, min_length=1, description="one SELECT, not a table; {{ params.x }} ok")
    batch_size: int = Field(default=10_000, ge=1, le=1_000_000, description="rows fetched and copied at a time")

    @model_validator(mode="after")
    def _table_or_query(self) -> SqlSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("give either 'table' (with an optional 'where') or 'query'")
        if self.query is not None and self.where is not None:
            raise ValueError("'where' applies to 'table': put the predicate in the query instead")
        return self


# -- files, S3 objects and HTTP APIs ------------------------------------------------------------------
# Formats read by the file and s3 sources, and written by the file and s3 sinks.
ReadFormat = Literal["csv", "jsonl", "parquet"]
WriteFormat = Literal["csv", "parquet"]
# Sinks that write objects (files) rather than a table: no staging connection of their own; their checks run
# on the staged dataset they write.
OBJECT_SINK_TYPES = ("file", "s3")
# Connection types (see connections.types) that a source or sink of each type accepts.
CONNECTION_TYPES_BY_STEP: dict[str, tuple[str, ...]] = {
    "postgres": ("postgres", "jdbc", "sql"),
    "sql": ("jdbc", "sql", "postgres"),
    "s3": ("s3",),
    "http": ("http",),
}


def _relative_path(value: str) -> str:
    """A path under the file root: relative, without `..`, so that no definition reaches outside it."""
    if not value.strip():
        raise ValueError("must not be empty")
    if value.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", value):
        raise ValueError("must be relative to the file root (PIPELINE_FILE_ROOT), not absolute")
    if "\\" in value or "\x00" in value:
        raise ValueError("must use '/' as separator and contain no NUL")
    if ".." in value.split("/"):
        raise ValueError("must not contain '..': paths stay under the file root")
    return value


def _relative_glob(value: str) -> str:
    if value.startswith("/") or ".." in value.split("/") or "\\" in value:
        raise ValueError("a glob is matched against paths under `path`: no leading '/', no '..'")
    return value


RelativePath = Annotated[
    str,
    Field(max_length=1024, description="relative to the tenant's file root (<PIPELINE_FILE_ROOT>/<tenant>)"),
    AfterValidator(_relative_path),
]
Glob = Annotated[
    str,
    Field(min_length=1, max_length=500, description="fnmatch pattern on paths relative to path/prefix; '*' spans '/'"),
    AfterValidator(_relative_glob),
]
BucketName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
KeyPrefix = Annotated[str, Field(default="", max_length=1024, pattern=r"^[^/\x00][^\x00]*$|^$")]
# `a.b.c` into a JSON document (list items by index: `data.0.items`); empty: the document itself.
JsonPointer = Annotated[str, Field(max_length=500, pattern=r"^([^.\s]+(\.[^.\s]+)*)?$")]
QueryParam = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-\[\]]{1,100}$")]


class _ObjectReader(_Step):
    glob: Glob = "*"
    format: ReadFormat
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="csv only")


class FileSource(_ObjectReader):
    """Files under `path` (a directory or one file) of the workers' file root, matching `glob`."""

    type: Literal["file"]
    path: RelativePath


class S3Source(_ObjectReader):
    """Objects of `bucket` under `prefix` matching `glob`, through an `s3` connection."""

    type: Literal["s3"]
    connection: ConnectionName
    bucket: BucketName
    prefix: KeyPrefix = ""


class PageNumberPagination(_Strict):
    """`page_param` = start, start+1, ... until a page has no records (or fewer than `size`)."""

    type: Literal["page_number"]
    page_param: QueryParam = "page"
    start: int = Field(default=1, ge=0)
    size_param: QueryParam | None = None
    size: int | None = Field(default=None, ge=1, le=100_000)


class NextLinkPagination(_Strict):
    """The next page's URL (absolute on the same host, or a path) is at `next_path` in each response."""

    type: Literal["next_link"]
    next_path: JsonPointer = "next"


class CursorPagination(_Strict):
    """The value at `cursor_path` of each response goes into `cursor_param` of the next request."""

    type: Literal["cursor"]
    cursor_path: JsonPointer
    cursor_param: QueryParam = "cursor"


Pagination = Annotated[PageNumberPagination | NextLinkPagination | CursorPagination, Field(discriminator="type")]


class HttpSource(_Step):
    """JSON records from an API behind an `http` connection (GET `path` relative to its base URL)."""

    type: Literal["http"]
    connection: ConnectionName
    # No empty segment: `//host/…` and `scheme://host/…` would leave the connection's host (urljoin).
    path: str = Field(default="/", max_length=1000, pattern=r"^/?([^\s?#/]+(/[^\s?#/]+)*/?)?$")
    params: dict[QueryParam, str | int | float | bool] = Field(
        default_factory=dict, description="query parameters; string values may use {{ params.x }}"
    )
    records_path: JsonPointer = Field(default="", description="where the list of records is in each response")
    pagination: Pagination | None = None
    max_pages: int = Field(default=100, ge=1, le=100_000, description="stops (with a warning) after this many pages")


Source = Annotated[PostgresSource | SqlSource | FileSource | S3Source | HttpSource, Field(discriminator="type")]
# The sources read from a database (incremental and partitioned extraction apply to them).
DatabaseSource = PostgresSource | SqlSource


class SqlTransform(_Step):
    name: DatasetName
    type: Literal["sql_transform"]
    materialize: Materialize = "table"
    inputs: list[DatasetName] = Field(min_length=1)
    sql: str = Field(min_length=1, description="One SELECT; earlier datasets are referenced by name")

    def input_names(self) -> list[str]:
        return list(self.inputs)


class LookupJoin(_Step):
    name: DatasetName
    type: Literal["lookup_join"]
    materialize: Materialize = "table"
    input: DatasetName
    lookup: DatasetName
    on: dict[ColumnName, ColumnName] = Field(min_length=1, description="input column -> lookup column")
    columns: list[ColumnName] = Field(min_length=1, description="lookup columns to add")
    how: Literal["left", "inner"] = "left"

    def input_names(self) -> list[str]:
        return [self.input, self.lookup]


class Filter(_Step):
    name: DatasetName
    type: Literal["filter"]
    materialize: Materialize = "table"
    input: DatasetName
    condition: str = Field(min_length=1, description="SQL predicate on the input's columns; may use {{ params.x }}")

    def input_names(self) -> list[str]:
        return [self.input]


class Aggregation(_Strict):
    function: Literal["sum", "count", "avg", "min", "max", "count_distinct"]
    column: ColumnName | None = Field(default=None, description="optional for count (then count(*))")

    @model_validator(mode="after")
    def _column_needed(self) -> Aggregation:
        if self.column is None and self.function != "count":
            raise ValueError(f"function '{self.function}' needs a 'column'")
        return self


class Aggregate(_Step):
    name: DatasetName
    type: Literal["aggregate"]
    materialize: Materialize = "table"
    input: DatasetName
    group_by: list[ColumnName] = Field(default_factory=list)
    aggregates: dict[ColumnName, Aggregation] = Field(min_length=1, description="output column -> aggregation")

    def input_names(self) -> list[str]:
        return [self.input]


class Deduplicate(_Step):
    """Keeps one row per distinct `keys`: the first in `order_by` order (any one when order_by is empty)."""

    name: DatasetName
    type: Literal["deduplicate"]
    materialize: Materialize = "table"
    input: DatasetName
    keys: list[ColumnName] = Field(min_length=1)
    order_by: list[ColumnName] = Field(default_factory=list)
    direction: Literal["asc", "desc"] = "desc"

    def input_names(self) -> list[str]:
        return [self.input]


class ColumnSelection(_Strict):
    from_: ColumnName | None = Field(default=None, alias="from", description="input column; default: same name")
    cast: SqlType | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SelectColumns(_Step):
    """Keeps, renames and casts columns: {new_name: {from, cast}} in output order."""

    name: DatasetName
    type: Literal["select_columns"]
    materialize: Materialize = "table"
    input: DatasetName
    columns: dict[ColumnName, ColumnSelection] = Field(min_length=1)

    def input_names(self) -> list[str]:
        return [self.input]


class PythonStep(_Step):
    """Calls an allow-listed callable, imported by dotted path on the worker (never code in the JSON).

    Contract: `fn(*, conn_id, schema, inputs, output, params, options)` must create the table
    `schema.output` in the staging database of Airflow connection `conn_id`; `inputs` are tables in
    `schema`, `params` the run's parameters, `options` this step's `options`. The table is dropped
    before the call (retries start clean) and must exist after it.
    """

    name: DatasetName
    type: Literal["python"]
    callable: DottedPath
    inputs: list[DatasetName] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict, description="JSON keyword data for the callable")

    def input_names(self) -> list[str]:
        return list(self.inputs)


# How `mask` rewrites a value: sha256 hex (pseudonymous, still joinable), `************1234`, a fixed marker, NULL.
MaskStrategy = Literal["hash", "last4", "redact", "null"]


class Mask(_Step):
    """Masks columns in place, pushed down: same columns, same order, only the named values rewritten.

    A named column the input does not have is left alone, so a compliance pack can mask a column wherever
    it appears. hash/last4/redact produce text: mask text columns with them (`null` suits any type).
    """

    name: DatasetName
    type: Literal["mask"]
    materialize: Materialize = "table"
    input: DatasetName
    columns: dict[ColumnName, MaskStrategy] = Field(min_length=1, description="column -> masking strategy")

    def input_names(self) -> list[str]:
        return [self.input]


# The transformations that are one SELECT run in the staging database (all but python).
SqlStep = SqlTransform | LookupJoin | Filter | Aggregate | Deduplicate | SelectColumns | Mask
Transformation = Annotated[SqlStep | PythonStep, Field(discriminator="type")]


class PostgresSink(_Step):
    type: Literal["postgres"]
    connection: ConnectionName
    table: TableName
    input: DatasetName
    mode: Literal["append", "overwrite", "merge"] = "append"
    keys: list[ColumnName] | None = None

    @model_validator(mode="after")
    def _merge_needs_keys(self) -> PostgresSink:
        if self.mode == "merge" and not self.keys:
            raise ValueError("mode 'merge' needs 'keys' (the columns that identify a row)")
        return self


class SqlSink(_Step):
    """A table of any SQLAlchemy-reachable database behind a `jdbc`/`sql` connection (created when missing)."""

    type: Literal["sql"]
    connection: ConnectionName
    table: TableName
    input: DatasetName
    mode: Literal["append", "overwrite", "merge"] = "append"
    keys: list[ColumnName] | None = None
    batch_size: int = Field(default=10_000, ge=1, le=1_000_000, description="rows written at a time")

    @model_validator(mode="after")
    def _merge_needs_keys(self) -> SqlSink:
        if self.mode == "merge" and not self.keys:
            raise ValueError("mode 'merge' needs 'keys' (the columns that identify a row)")
        return self


class _ObjectWriter(_Step):
    input: DatasetName
    format: WriteFormat = "parquet"
    partition_by: list[ColumnName] = Field(
        default_factory=list, description="hive-style directories col=value/ (the columns leave the files)"
    )
    mode: Literal["overwrite", "append"] = Field(
        default="overwrite", description="overwrite: replace everything under the target; append: add part files"
    )


class FileSink(_ObjectWriter):
    """Writes a dataset as files under `path` (a directory) of the workers' file root."""

    type: Literal["file"]
    path: RelativePath


class S3Sink(_ObjectWriter):
    """Writes a dataset as objects under `prefix` (a directory) of `bucket`, through an `s3` connection."""

    type: Literal["s3"]
    connection: ConnectionName
    bucket: BucketName
    prefix: Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[^/\x00][^\x00]*$")]


Sink = Annotated[PostgresSink | SqlSink | FileSink | S3Sink, Field(discriminator="type")]
# The sinks that write a table (the others write files or objects: OBJECT_SINK_TYPES).
TableSink = PostgresSink | SqlSink
ObjectSink = FileSink | S3Sink


class QualityCheck(_Strict):
    name: DatasetName
    dataset: DatasetName = Field(
        description="what is checked: a sink (a table once loaded; a file/s3 sink's data before it is written), "
        "or a source or transformation (as staged, before anything reads it); a name of both means the sink"
    )
    expectation: str = Field(pattern=r"^expect_[a-z0-9_]+$", description="great-expectations name")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    severity: Literal["error", "warn"] = "error"


class OnFailure(_Strict):
    """Where a failed run (or a missed SLA) POSTs its JSON summary: a plain `webhook` URL, or an `http`
    connection (its URL + `path`, headers and basic auth), which keeps a URL carrying a token out of the
    definition and the DAG file."""

    webhook: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2000)] | None = Field(
        default=None,
        description="a URL, stored as written (shown in the definition): one carrying a token belongs in a connection",
    )
    connection: ConnectionName | None = Field(default=None, description="an http connection to POST to")
    path: Annotated[str, Field(max_length=1000, pattern=r"^[^\s]*$")] = Field(
        default="", description="with connection: appended to the connection's URL"
    )

    @model_validator(mode="after")
    def _one_target(self) -> OnFailure:
        if (self.webhook is None) == (self.connection is None):
            raise ValueError("set exactly one of 'webhook' (a URL) or 'connection' (an http connection)")
        if self.path and self.connection is None:
            raise ValueError("'path' goes with 'connection' (a webhook URL carries its own path)")
        return self


class Orchestration(_Strict):
    retries: int = Field(default=0, ge=0, le=20)
    retry_delay_seconds: int = Field(default=300, ge=0, le=86_400)
    timeout_seconds: int | None = Field(default=None, gt=0, le=7 * 86_400)
    max_active_runs: int = Field(default=1, ge=1, le=100)
    staging_connection: ConnectionName | None = Field(
        default=None, description="where datasets are staged and transformed; default: the first sink's"
    )
    concurrency: int | None = Field(default=None, ge=1, le=1000, description="max tasks running at once per run")
    priority: int | None = Field(default=None, ge=1, le=1000, description="Airflow priority_weight of every task")
    sla_seconds: int | None = Field(
        default=None, gt=0, le=7 * 86_400, description="a run still unfinished this long after queueing raises an alert"
    )
    on_failure: OnFailure | None = None


# A dataset as the lineage API names it (Dataset.fqn): `database.schema.table`, a file's absolute path, ...
DatasetFqn = Annotated[str, Field(min_length=1, max_length=1000, pattern=r"^[^\s]+$")]


class DataSchedule(_Strict):
    """Run the pipeline when datasets were written: Airflow's asset-triggered scheduling. Each dataset must be
    written by another pipeline of the same tenant (a sink of it); the pipeline runs once each of them has
    been written since its last such run (Airflow's semantics of a list of assets). Cron schedules
    (/v1/pipelines/schedules) still run it too."""

    on_datasets: list[DatasetFqn] = Field(
        alias="onDatasets",
        min_length=1,
        max_length=20,
        description="datasets (fqn as the lineage API shows it, e.g. database.schema.table) whose writes run it",
    )

    @field_validator("on_datasets")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each dataset once")
        return value


# The options of an approval gate's human-in-the-loop task: the service answers with one of them.
GATE_APPROVE, GATE_REJECT = "Approve", "Reject"
# Who may answer an approval gate: the service's roles (service.auth).
ApproverRole = Literal["admin", "editor", "viewer"]


def _admins() -> list[ApproverRole]:
    return ["admin"]


GateName = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")]
MAX_GATE_SECONDS = 30 * 86_400


class ApprovalGate(_Strict):
    """A human approval before the named sinks or transformations: an Airflow human-in-the-loop task that runs
    once everything those steps depend on has run, and before them. `quorum` distinct approvers must approve;
    one rejection decides at once and fails the run with its reason. Without an answer within
    `expiresAfterSeconds` the gate decides as `onExpiry` says (reject fails the run)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: GateName
    before: list[DatasetName] = Field(min_length=1, description="sinks or transformations the gate holds back")
    approver_roles: list[ApproverRole] = Field(
        default_factory=_admins, alias="approverRoles", min_length=1, description="who may answer"
    )
    quorum: int = Field(default=1, ge=1, le=20, description="distinct approvals needed")
    expires_after_seconds: int | None = Field(
        default=None, alias="expiresAfterSeconds", ge=1, le=MAX_GATE_SECONDS, description="none: waits for an answer"
    )
    on_expiry: Literal["reject", "approve"] = Field(default="reject", alias="onExpiry")

    @field_validator("before", "approver_roles")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each name once")
        return value


class PipelineDefinition(_Strict):
    parameters: dict[ColumnName, ParameterSpec] = Field(default_factory=dict)
    sources: dict[DatasetName, Source] = Field(min_length=1)
    transformations: list[Transformation] = Field(default_factory=list)
    sinks: dict[DatasetName, Sink] = Field(min_length=1)
    quality_checks: list[QualityCheck] = Field(default_factory=list)
    orchestration: Orchestration = Field(default_factory=Orchestration)
    schedule: DataSchedule | None = Field(default=None, description="data-triggered runs (besides cron schedules)")
    approvals: list[ApprovalGate] = Field(
        default_factory=list, max_length=20, description="human approval gates before sinks or transformations"
    )

    def connection_names(self) -> list[str]:
        return sorted(connection_names_of(self.model_dump(include={"sources", "sinks", "orchestration"})))

    def staging_connection(self) -> str | None:
        """The explicit one, or the first sink's that is a database (None when every sink writes files)."""
        tables = (s.connection for s in self.sinks.values() if isinstance(s, TableSink))
        return self.orchestration.staging_connection or next(tables, None)


def connection_names_of(definition: dict[str, Any]) -> set[str]:
    """Every connection a definition (as stored: a dict) names: steps, staging, failure notifications."""
    steps = [*(definition.get("sources") or {}).values(), *(definition.get("sinks") or {}).values()]
    orchestration = definition.get("orchestration") or {}
    names = {s.get("connection") for s in steps if isinstance(s, dict)}  # a file source or sink has none
    names |= {orchestration.get("staging_connection"), (orchestration.get("on_failure") or {}).get("connection")}
    return {n for n in names if n}
