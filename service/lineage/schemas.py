"""Responses of the lineage read side: a pipeline's lineage and a dataset's impact."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from service.schemas import ApiModel


class DatasetOut(ApiModel):
    type: Literal["TABLE", "FILE", "API"]
    fqn: str = Field(
        description="a table's `database.schema.table`; a file's absolute path; an object prefix or API path "
        "with its namespace (`s3://bucket/prefix`)"
    )
    namespace: str = Field(description="OpenLineage's namespace: `postgres://host:port`, `file`, `s3://bucket`")


class StepDatasetOut(DatasetOut):
    step: str = Field(description="the source or sink of the definition that reads or writes it")


class TransformationOut(ApiModel):
    name: str
    type: str


class ExecutionRefOut(ApiModel):
    execution_id: str
    status: str
    started_at: datetime | None
    finished_at: datetime | None


class SourceColumnOut(ApiModel):
    step: str = Field(
        description="the definition's source it is read by; for a table named in a transformation's SQL that "
        "is not a step of the definition, the name as written"
    )
    fqn: str | None = Field(description="the source dataset's fqn (null: a source without a table, e.g. a query)")
    namespace: str | None
    column: str = Field(description="`*`: every column of the source passes through by name")


class ColumnOut(ApiModel):
    sink: str = Field(description="the definition's sink")
    column: str = Field(
        description="a column the sink receives; `*` stands for its columns not listed, which pass through by "
        "name from the sources (a source table's columns are not known before a run)"
    )
    sources: list[SourceColumnOut] = Field(
        description="the source columns the value is computed from: empty when it is computed from none "
        "(count(*), a literal, a masked-to-null column) or when the lineage is unknown"
    )
    transformations: list[str] = Field(description="the transformations on the way, in run order")
    known: bool = Field(
        description="false when a step on the way cannot be followed (a python step, SQL the parser refused, "
        "a `*` over a subquery): then `unknownAt` names it and `sources` holds what is known"
    )
    unknown_at: str | None = None


class DifferenceOut(ApiModel):
    """A source or sink the last execution's events name differently from the current definition."""

    role: Literal["source", "sink"]
    step: str
    definition: DatasetOut | None = Field(description="what the current definition names (null: nothing)")
    events: DatasetOut | None = Field(description="what the execution reported (null: nothing)")


class PipelineLineageOut(ApiModel):
    pipeline_id: str
    sources: list[StepDatasetOut]
    sinks: list[StepDatasetOut]
    transformations: list[TransformationOut]
    last_executed: datetime | None = Field(description="when the last execution started; null before any run")
    last_execution: ExecutionRefOut | None
    columns: list[ColumnOut] = Field(
        description="column-level lineage of each sink column, from the SQL of the current definition's "
        "transformations (openlineage-sql)"
    )
    origin: Literal["definition", "events"] = Field(
        description="`events`: sources and sinks are what the execution `originExecutionId` reported to "
        "OpenLineage (the latest one that reported its sinks' writes, else the latest that reported anything); "
        "a step it reported nothing for keeps the definition's dataset. `definition`: named from the current "
        "definition and the connections (no execution has reported yet)"
    )
    origin_execution_id: str | None = None
    differences: list[DifferenceOut] = Field(
        description="where the events disagree with the current definition (e.g. a connection changed since): "
        "the events win in `sources` and `sinks`"
    )


class PipelineRefOut(ApiModel):
    pipeline_id: str
    name: str


class ImpactPipelineOut(PipelineRefOut):
    depth: int = Field(description="1: reads the dataset; n: reads what a pipeline of depth n-1 writes")
    reads: list[str] = Field(description="the fqns it reads among the impacted datasets")


class ImpactDatasetOut(DatasetOut):
    depth: int = Field(description="written by a pipeline of this depth")
    written_by: list[str] = Field(description="the impacted pipelines that write it")


class DownstreamOut(ApiModel):
    pipelines: list[ImpactPipelineOut]
    datasets: list[ImpactDatasetOut]


class DatasetImpactOut(ApiModel):
    fqn: str
    datasets: list[DatasetOut] = Field(
        description="the datasets of that fqn some pipeline of the tenant reads or writes (one per namespace); "
        "empty: no pipeline of the tenant knows it (and every list is empty)"
    )
    readers: list[PipelineRefOut]
    writers: list[PipelineRefOut]
    downstream: DownstreamOut = Field(
        description="what breaks if the dataset changes: the pipelines that read it (depth 1), what they "
        "write, the pipelines that read that (depth 2), ... up to `maxDepth`; each pipeline and dataset once"
    )
    max_depth: int
    truncated: bool = Field(description="true when the graph goes on beyond `maxDepth`")
