"""Pydantic models of a pipeline definition.

This module is imported by the service to validate input, so it must never import Airflow.
Every model forbids unknown keys: a typo in a definition is an error, not a silently dropped key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The task that drops a run's staging schema: an Airflow teardown, so it runs even when the run is cancelled.
TEARDOWN_TASK_ID = "cleanup_staging"

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
        schema: dict[str, Any] = {"type": self.type}
        for key in ("format", "enum", "minimum", "maximum", "description"):
            value = getattr(self, key)
            if value is not None:
                schema[key] = value
        return schema


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


class PostgresSource(_Step):
    type: Literal["postgres"]
    connection: ConnectionName
    table: TableName
    where: str | None = Field(default=None, description="SQL predicate; may use {{ params.x }}")
    materialize: Materialize = Field(default="table", description="view: only when on the staging connection")


Source = Annotated[PostgresSource, Field(discriminator="type")]


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


Transformation = Annotated[
    SqlTransform | LookupJoin | Filter | Aggregate | Deduplicate | SelectColumns | PythonStep,
    Field(discriminator="type"),
]


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


Sink = Annotated[PostgresSink, Field(discriminator="type")]


class QualityCheck(_Strict):
    name: DatasetName
    dataset: DatasetName = Field(description="a sink name")
    expectation: str = Field(pattern=r"^expect_[a-z0-9_]+$", description="great-expectations name")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    severity: Literal["error", "warn"] = "error"


class OnFailure(_Strict):
    webhook: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2000)] = Field(
        description="POSTed a JSON summary of a failed run (or a missed SLA); no secrets are sent"
    )


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


class PipelineDefinition(_Strict):
    parameters: dict[ColumnName, ParameterSpec] = Field(default_factory=dict)
    sources: dict[DatasetName, Source] = Field(min_length=1)
    transformations: list[Transformation] = Field(default_factory=list)
    sinks: dict[DatasetName, Sink] = Field(min_length=1)
    quality_checks: list[QualityCheck] = Field(default_factory=list)
    orchestration: Orchestration = Field(default_factory=Orchestration)

    def connection_names(self) -> list[str]:
        names = [s.connection for s in self.sources.values()] + [s.connection for s in self.sinks.values()]
        if self.orchestration.staging_connection:
            names.append(self.orchestration.staging_connection)
        return sorted(set(names))

    def staging_connection(self) -> str:
        return self.orchestration.staging_connection or next(iter(self.sinks.values())).connection
