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


class PostgresSource(_Strict):
    type: Literal["postgres"]
    connection: ConnectionName
    table: TableName
    where: str | None = Field(default=None, description="SQL predicate; may use {{ params.x }}")


Source = Annotated[PostgresSource, Field(discriminator="type")]


class SqlTransform(_Strict):
    name: DatasetName
    type: Literal["sql_transform"]
    inputs: list[DatasetName] = Field(min_length=1)
    sql: str = Field(min_length=1, description="One SELECT; earlier datasets are referenced by name")

    def input_names(self) -> list[str]:
        return list(self.inputs)


class LookupJoin(_Strict):
    name: DatasetName
    type: Literal["lookup_join"]
    input: DatasetName
    lookup: DatasetName
    on: dict[ColumnName, ColumnName] = Field(min_length=1, description="input column -> lookup column")
    columns: list[ColumnName] = Field(min_length=1, description="lookup columns to add")
    how: Literal["left", "inner"] = "left"

    def input_names(self) -> list[str]:
        return [self.input, self.lookup]


Transformation = Annotated[SqlTransform | LookupJoin, Field(discriminator="type")]


class PostgresSink(_Strict):
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


class Orchestration(_Strict):
    retries: int = Field(default=0, ge=0, le=20)
    retry_delay_seconds: int = Field(default=300, ge=0, le=86_400)
    timeout_seconds: int | None = Field(default=None, gt=0, le=7 * 86_400)
    max_active_runs: int = Field(default=1, ge=1, le=100)
    staging_connection: ConnectionName | None = Field(
        default=None, description="where datasets are staged and transformed; default: the first sink's"
    )


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
