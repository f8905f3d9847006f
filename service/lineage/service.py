"""Lineage read side: a pipeline's sources, sinks and column lineage (from its definition before any run, from
its OpenLineage events after), and the impact of a dataset across the tenant's pipelines."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy.orm import Session

from dag_factory.exceptions import DefinitionError
from dag_factory.spec import PipelineDefinition, validate_definition
from dag_factory.spec.datasets import (
    Dataset,
    DatasetKind,
    DefinitionDatasets,
    Endpoint,
    definition_datasets,
    query_datasets,
    query_tables,
    table_dataset,
)
from dag_factory.spec.models import SqlSource
from dag_factory.spec.task_ids import SINKS_PREFIX, SOURCES_PREFIX
from service.connections.service import endpoints
from service.executions.models import Execution
from service.lineage import repository
from service.lineage.columns import ColumnLineage, SinkColumn, table_ref
from service.lineage.repository import EventDataset
from service.lineage.schemas import (
    ColumnOut,
    DatasetImpactOut,
    DatasetOut,
    DifferenceOut,
    DownstreamOut,
    ExecutionRefOut,
    ImpactDatasetOut,
    ImpactPipelineOut,
    PipelineLineageOut,
    PipelineRefOut,
    SourceColumnOut,
    StepDatasetOut,
    TransformationOut,
)
from service.pipelines import repository as pipelines_repo
from service.pipelines import service as pipelines
from service.pipelines.models import Pipeline

# A run's staging tables (dag_factory.operators.staging.staging_schema): `stg_` and 20 hex digits. What a
# source task writes and a sink task reads there is the pipeline's inside, not its lineage.
_STAGING_SCHEMA = re.compile(r"^stg_[0-9a-f]{20}$")
DEFAULT_DEPTH, MAX_DEPTH = 10, 50


def kind_of(namespace: str) -> DatasetKind:
    """The kind of a dataset the definition does not name, from its OpenLineage namespace."""
    if namespace == "file" or namespace.startswith(("s3://", "gs://", "abfss://", "file://")):
        return "FILE"
    return "API" if namespace.startswith(("http://", "https://")) else "TABLE"


def is_staging(namespace: str, name: str) -> bool:
    parts = name.split(".")
    return kind_of(namespace) == "TABLE" and len(parts) == 3 and bool(_STAGING_SCHEMA.match(parts[1]))


def step_of(task_id: str) -> str:
    """The source or sink a task works for: `sources.orders.part_2` -> `orders`."""
    return task_id.removeprefix(SOURCES_PREFIX).removeprefix(SINKS_PREFIX).split(".", 1)[0]


def _dataset_out(d: Dataset) -> DatasetOut:
    return DatasetOut(type=d.kind, fqn=d.fqn, namespace=d.namespace)


def _step_out(step: str, d: Dataset) -> StepDatasetOut:
    return StepDatasetOut(step=step, type=d.kind, fqn=d.fqn, namespace=d.namespace)


@dataclass
class Named:
    """The datasets of one pipeline's sources and sinks (several per step: a step may read many objects)."""

    sources: dict[str, list[Dataset]] = field(default_factory=dict)
    sinks: dict[str, list[Dataset]] = field(default_factory=dict)

    def reads(self) -> set[Dataset]:
        return {d for ds in self.sources.values() for d in ds}

    def writes(self) -> set[Dataset]:
        return {d for ds in self.sinks.values() for d in ds}


def from_definition(named: DefinitionDatasets, queries: Mapping[str, list[Dataset]]) -> Named:
    """The definition's datasets, a source with a query naming the tables the query reads."""
    sources: dict[str, list[Dataset]] = {}
    for step in dict.fromkeys([*named.sources, *queries]):
        if datasets := [named.sources[step]] if step in named.sources else list(queries.get(step, [])):
            sources[step] = datasets
    return Named(sources, {k: [v] for k, v in named.sinks.items()})


def from_events(rows: Iterable[EventDataset], named: DefinitionDatasets) -> Named:
    """Sources: what the sources.* tasks read, staging tables aside; sinks: what the sinks.* tasks wrote. The
    kind is the definition's for its step (TABLE, FILE, API), else told by the namespace."""
    out = Named()
    for row in rows:
        if is_staging(row.namespace, row.name):
            continue
        step = step_of(row.task_id)
        is_source = row.direction == "input"
        known = (named.sources if is_source else named.sinks).get(step)
        kind = known.kind if known is not None else kind_of(row.namespace)
        group = (out.sources if is_source else out.sinks).setdefault(step, [])
        if (d := Dataset(kind, row.namespace, row.name)) not in group:
            group.append(d)
    return out


def merged(named: DefinitionDatasets, queries: Mapping[str, list[Dataset]], reported: Named) -> Named:
    """The events' datasets for the steps they name; the definition's for the others (a step that reported
    nothing, like a sql sink, which knows no table statistics, or a query source, is not thereby contradicted)."""
    base = from_definition(named, queries)
    return Named({**base.sources, **reported.sources}, {**base.sinks, **reported.sinks})


def _differences(
    role: Literal["source", "sink"], definition: Mapping[str, Dataset], events: Mapping[str, list[Dataset]]
) -> list[DifferenceOut]:
    out = []
    for step in sorted(events):
        named, reported = definition.get(step), events[step]
        if named is not None and reported == [named]:
            continue
        before = _dataset_out(named) if named is not None else None
        out += [DifferenceOut(role=role, step=step, definition=before, events=_dataset_out(d)) for d in reported]
    return out


def _definition_of(session: Session, pipeline: Pipeline) -> PipelineDefinition:
    return pipelines.parse_definition(pipelines_repo.current_version(session, pipeline).definition)


def pipeline_lineage(session: Session, tenant_id: str, pipeline_id: str, *, root: str) -> PipelineLineageOut:
    pipeline = pipelines.get_or_404(session, tenant_id, pipeline_id)
    definition = _definition_of(session, pipeline)
    conns = endpoints(session, tenant_id)
    named = definition_datasets(definition, conns, tenant=tenant_id, file_root=root)
    queries = query_datasets(definition, conns)
    rows = repository.pipeline_event_datasets(session, tenant_id, pipeline.id)
    reported = from_events(rows, named)
    used = merged(named, queries, reported)
    differences = _differences("source", named.sources, reported.sources) + _differences(
        "sink", named.sinks, reported.sinks
    )
    last = repository.last_execution(session, tenant_id, pipeline.id)
    column_sources = _column_sources(definition, conns, used)
    return PipelineLineageOut(
        pipeline_id=pipeline.id,
        sources=[_step_out(step, d) for step, ds in used.sources.items() for d in ds],
        sinks=[_step_out(step, d) for step, ds in used.sinks.items() for d in ds],
        transformations=[TransformationOut(name=t.name, type=t.type) for t in definition.transformations],
        last_executed=last.started_at if last is not None else None,
        last_execution=_execution_ref(last) if last is not None else None,
        columns=[_column_out(c, column_sources) for c in ColumnLineage(definition).sink_columns()],
        origin="events" if rows else "definition",
        origin_execution_id=rows[0].execution_id if rows else None,
        differences=differences,
    )


def _execution_ref(e: Execution) -> ExecutionRefOut:
    return ExecutionRefOut(execution_id=e.id, status=e.status, started_at=e.started_at, finished_at=e.finished_at)


def _column_sources(
    definition: PipelineDefinition, conns: Mapping[str, Endpoint], used: Named
) -> dict[str, tuple[str, list[Dataset]]]:
    """What a column lineage's source reference names: a source (its datasets), or a table a source's query
    reads (columns.table_ref), by the source's connection."""
    out = {step: (step, datasets) for step, datasets in used.sources.items()}
    for name, source in definition.sources.items():
        if isinstance(source, SqlSource) and source.query is not None and source.connection in conns:
            for table in query_tables(source.query):
                out[table_ref(name, table)] = (name, [table_dataset(conns[source.connection], table)])
    return out


def _column_out(c: SinkColumn, sources: Mapping[str, tuple[str, list[Dataset]]]) -> ColumnOut:
    refs = []
    for ref in c.trace.sources:
        step, datasets = sources.get(ref.dataset, (ref.dataset, []))
        refs += [SourceColumnOut(step=step, fqn=d.fqn, namespace=d.namespace, column=ref.column) for d in datasets]
        if not datasets:  # a source not named (its connection is gone), or a table outside the definition
            refs.append(SourceColumnOut(step=step, fqn=None, namespace=None, column=ref.column))
    return ColumnOut(
        sink=c.sink,
        column=c.column,
        sources=refs,
        transformations=list(c.trace.transformations),
        known=c.trace.unknown_at is None,
        unknown_at=c.trace.unknown_at,
    )


@dataclass
class Graph:
    """The tenant's pipelines as a graph: what each reads and writes, and who reads each dataset."""

    pipelines: dict[str, Pipeline] = field(default_factory=dict)
    reads: dict[str, set[Dataset]] = field(default_factory=dict)
    writes: dict[str, set[Dataset]] = field(default_factory=dict)
    readers: dict[Dataset, list[str]] = field(default_factory=dict)

    def add(self, pipeline: Pipeline, named: Named) -> None:
        self.pipelines[pipeline.id] = pipeline
        self.reads[pipeline.id], self.writes[pipeline.id] = named.reads(), named.writes()
        for d in self.reads[pipeline.id]:
            self.readers.setdefault(d, []).append(pipeline.id)

    def datasets(self) -> set[Dataset]:
        return set(self.readers) | {d for ds in self.writes.values() for d in ds}

    def readers_of(self, datasets: Iterable[Dataset]) -> set[str]:
        return {pid for d in datasets for pid in self.readers.get(d, [])}


def _tenant_graph(session: Session, tenant_id: str, root: str) -> Graph:
    """Each pipeline of the tenant with what it reads and writes: its definition's datasets and those its
    latest execution reported (both: what breaks is better over- than under-told)."""
    conns = endpoints(session, tenant_id)
    events: dict[str, list[EventDataset]] = {}
    for row in repository.tenant_event_datasets(session, tenant_id):
        events.setdefault(row.pipeline_id, []).append(row)
    graph = Graph()
    for pipeline, raw in pipelines_repo.tenant_definitions(session, tenant_id):
        try:  # checked when it was stored: the model is enough (its SQL is not parsed again)
            definition = validate_definition(raw, check_sql=False)
        except DefinitionError:  # a definition stored under an older spec: it names nothing
            continue
        named = definition_datasets(definition, conns, tenant=tenant_id, file_root=root)
        both = from_definition(named, query_datasets(definition, conns))
        reported = from_events(events.get(pipeline.id, []), named)
        for mine, theirs in ((both.sources, reported.sources), (both.sinks, reported.sinks)):
            for step, ds in theirs.items():
                mine[step] = [*mine.get(step, []), *(d for d in ds if d not in mine.get(step, []))]
        graph.add(pipeline, both)
    return graph


def dataset_impact(
    session: Session, tenant_id: str, fqn: str, *, namespace: str | None, max_depth: int, root: str
) -> DatasetImpactOut:
    graph = _tenant_graph(session, tenant_id, root)
    matched = {d for d in graph.datasets() if d.fqn == fqn and (namespace is None or d.namespace == namespace)}
    writers = [p for pid, p in graph.pipelines.items() if graph.writes[pid] & matched]
    pipelines_out, datasets_out, truncated = _downstream(graph, matched, max_depth)
    return DatasetImpactOut(
        fqn=fqn,
        datasets=[_dataset_out(d) for d in sorted(matched, key=lambda d: d.namespace)],
        readers=_refs(graph.pipelines[pid] for pid in graph.readers_of(matched)),
        writers=_refs(writers),
        downstream=DownstreamOut(pipelines=pipelines_out, datasets=datasets_out),
        max_depth=max_depth,
        truncated=truncated,
    )


def _refs(pipelines_: Iterable[Pipeline]) -> list[PipelineRefOut]:
    return [PipelineRefOut(pipeline_id=p.id, name=p.name) for p in sorted(pipelines_, key=lambda p: (p.name, p.id))]


def _downstream(
    graph: Graph, start: set[Dataset], max_depth: int
) -> tuple[list[ImpactPipelineOut], list[ImpactDatasetOut], bool]:
    """Breadth first from `start`: readers of the frontier, then what they write. Each pipeline and dataset is
    visited once, so cycles end; the walk stops after `max_depth` pipeline levels."""
    seen_datasets, seen_pipelines = set(start), set[str]()
    pipelines_out: list[ImpactPipelineOut] = []
    datasets_out: list[ImpactDatasetOut] = []
    frontier, depth = set(start), 0
    while frontier and depth < max_depth:
        depth += 1
        level = sorted(
            (graph.pipelines[pid] for pid in graph.readers_of(frontier) - seen_pipelines), key=lambda p: (p.name, p.id)
        )
        written: dict[Dataset, list[str]] = {}
        for p in level:
            seen_pipelines.add(p.id)
            reads = sorted(d.fqn for d in graph.reads[p.id] & frontier)
            pipelines_out.append(ImpactPipelineOut(pipeline_id=p.id, name=p.name, depth=depth, reads=reads))
            for d in graph.writes[p.id] - seen_datasets:
                written.setdefault(d, []).append(p.id)
        for d, by in sorted(written.items(), key=lambda item: (item[0].fqn, item[0].namespace)):
            datasets_out.append(
                ImpactDatasetOut(type=d.kind, fqn=d.fqn, namespace=d.namespace, depth=depth, written_by=by)
            )
        seen_datasets |= set(written)
        frontier = set(written)
    return pipelines_out, datasets_out, bool(graph.readers_of(frontier) - seen_pipelines)
