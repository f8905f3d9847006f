"""A pipeline's Airflow assets: its sources (inlets) and sinks (outlets) as the tenant's assets, and its data
schedule (`schedule.onDatasets`: datasets that another pipeline of the tenant writes).

The service resolves them, not the dag-processor (which cannot look up connections, and should not at every
parse): the publisher puts the resolved names and URIs into the DAG file (dag_factory.builder reads them).
Dataset names come from dag_factory.spec.datasets, the same names as the lineage API's; the tenant's asset
of a dataset from `tenant_asset` there (Airflow's assets are global: each tenant has its own)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from dag_factory.exceptions import DefinitionError
from dag_factory.spec import PipelineDefinition, validate_definition
from dag_factory.spec.datasets import Dataset, Endpoint, definition_datasets, tenant_asset
from service.config import Settings, get_settings
from service.connections.service import endpoints
from service.errors import ValidationFailed
from service.pipelines import repository

SELF_TRIGGER = "is written by this pipeline itself: a run would trigger the next one"


def file_root(settings: Settings | None = None) -> str:
    """Where the workers' file sources and sinks live (the Airflow stack's PIPELINE_FILE_ROOT, by default
    <data dir>/files): the absolute paths that name file datasets."""
    configured = os.environ.get("PIPELINE_FILE_ROOT")
    return str(Path(configured or (settings or get_settings()).data_dir / "files").resolve())


@dataclass(frozen=True)
class WrittenDataset:
    """A dataset one of the tenant's pipelines writes (one of its sinks)."""

    pipeline_id: str
    pipeline_name: str
    sink: str
    dataset: Dataset


@dataclass(frozen=True)
class Flow:
    """What one of the tenant's pipelines writes, and the datasets its data schedule waits for."""

    pipeline_id: str
    pipeline_name: str
    sinks: dict[str, Dataset]
    on_datasets: tuple[str, ...]


def _datasets(
    definition: PipelineDefinition, named: Mapping[str, Endpoint], tenant_id: str, root: str
) -> tuple[dict[str, Dataset], dict[str, Dataset]]:
    found = definition_datasets(definition, named, tenant=tenant_id, file_root=root)
    return found.sources, found.sinks


def tenant_flows(session: Session, tenant_id: str, *, root: str, named: Mapping[str, Endpoint]) -> list[Flow]:
    """Every pipeline of the tenant, as its current definition says."""
    flows = []
    for pipeline, data in repository.tenant_definitions(session, tenant_id):
        try:
            definition = validate_definition(data, check_sql=False)
        except DefinitionError:
            continue  # stored before the language changed: it names nothing
        on = tuple(definition.schedule.on_datasets) if definition.schedule else ()
        flows.append(Flow(pipeline.id, pipeline.name, _datasets(definition, named, tenant_id, root)[1], on))
    return flows


def written_datasets(
    session: Session, tenant_id: str, *, root: str, named: Mapping[str, Endpoint] | None = None
) -> list[WrittenDataset]:
    """Every sink of the tenant's pipelines (as their current definitions say), named."""
    named = endpoints(session, tenant_id) if named is None else named
    return [
        WrittenDataset(flow.pipeline_id, flow.pipeline_name, sink, dataset)
        for flow in tenant_flows(session, tenant_id, root=root, named=named)
        for sink, dataset in flow.sinks.items()
    ]


def _triggered(writes: set[str], others: list[Flow]) -> list[Flow]:
    """The pipelines that writing `writes` runs, directly or down a chain of data schedules."""
    reached: list[Flow] = []
    frontier = set(writes)
    while frontier:
        runs = [f for f in others if f not in reached and frontier.intersection(f.on_datasets)]
        reached += runs
        frontier = {d.fqn for f in runs for d in f.sinks.values()} - writes
        writes |= frontier
    return reached


def check_data_schedule(
    session: Session,
    tenant_id: str,
    definition: PipelineDefinition,
    *,
    pipeline_id: str | None = None,
    root: str | None = None,
) -> None:
    """400 naming `definition.schedule.onDatasets[i]` for a dataset that no other pipeline of the tenant
    writes; that this pipeline writes itself; or that a pipeline its own writes run (down a chain of data
    schedules) writes: each a loop of runs. `pipeline_id`: the pipeline being updated, whose stored
    definition the given one replaces."""
    if definition.schedule is None:
        return
    root = root or file_root()
    named = endpoints(session, tenant_id)
    own = {d.fqn for d in _datasets(definition, named, tenant_id, root)[1].values()}
    flows = [f for f in tenant_flows(session, tenant_id, root=root, named=named) if f.pipeline_id != pipeline_id]
    others = {d.fqn for f in flows for d in f.sinks.values()}
    looped = {d.fqn: f.pipeline_name for f in _triggered(set(own), flows) for d in f.sinks.values()}
    details = []
    for i, fqn in enumerate(definition.schedule.on_datasets):
        path = f"definition.schedule.onDatasets[{i}]"
        if fqn in own:
            details.append({"path": path, "message": f"dataset '{fqn}' {SELF_TRIGGER}"})
        elif fqn not in others:
            hint = ", ".join(sorted(others)[:10]) or "none yet"
            message = f"no other pipeline of this tenant writes dataset '{fqn}' (written: {hint})"
            details.append({"path": path, "message": message})
        elif fqn in looped:
            message = (
                f"dataset '{fqn}' is written by pipeline '{looped[fqn]}', which this pipeline's own writes run "
                "(through data schedules): a loop of runs"
            )
            details.append({"path": path, "message": message})
    if details:
        raise ValidationFailed(f"{details[0]['path']}: {details[0]['message']}", details=details)


def dag_assets(
    session: Session, tenant_id: str, pipeline_id: str, definition: PipelineDefinition, *, root: str
) -> dict[str, Any]:
    """The DAG file's `assets` (dag_factory.builder.build_dag): the tenant's asset of each source and sink,
    and, for a data schedule, the assets of each of its datasets as the tenant's other pipelines write them
    now. A dataset no other pipeline writes any more (deleted, or its sink changed): 400 naming it, which
    the publisher reports as the pipeline's INVALID status."""
    named = endpoints(session, tenant_id)
    sources, sinks = _datasets(definition, named, tenant_id, root)
    out: dict[str, Any] = {
        "sources": {name: tenant_asset(d, tenant_id).as_json() for name, d in sources.items()},
        "sinks": {name: tenant_asset(d, tenant_id).as_json() for name, d in sinks.items()},
    }
    if definition.schedule is None:
        return out
    check_data_schedule(session, tenant_id, definition, pipeline_id=pipeline_id, root=root)
    by_fqn: dict[str, list[dict[str, str]]] = {}
    for w in written_datasets(session, tenant_id, root=root, named=named):
        if w.pipeline_id != pipeline_id and w.dataset.fqn in definition.schedule.on_datasets:
            asset = tenant_asset(w.dataset, tenant_id).as_json()
            if asset not in by_fqn.setdefault(w.dataset.fqn, []):
                by_fqn[w.dataset.fqn].append(asset)
    out["schedule"] = {fqn: sorted(refs, key=lambda r: r["uri"]) for fqn, refs in by_fqn.items()}
    return out
