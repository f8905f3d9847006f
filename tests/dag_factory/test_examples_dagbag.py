"""Every example definition, published the way the service publishes it, parses in Airflow the way the
dag-processor parses it: the DAG file rendered by service.pipelines.dagfile.render (under the file name the
publisher uses), imported through Airflow's DagBag with zero import errors, serialised (the dag-processor
serialises every DAG, and a failure there is an import error too), and stable: parsing the same file again
gives the same serialised DAG, so Airflow never records a new DAG version for an unchanged pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
from airflow.utils.dag_version_inflation_checker import check_dag_file_stability

from dag_factory.spec import validate_definition
from service import naming
from service.pipelines import dagfile

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.json"))
TENANT = "acme"


def publish(folder: Path, body: dict[str, Any]) -> tuple[str, Path]:
    """The DAG file the service's publisher writes for this create body (its config, its file name)."""
    definition = body["definition"]
    dag_id = naming.dag_id(TENANT, body["name"])
    config = {
        "dag_id": dag_id,
        "definition": definition,
        "connections": {
            n: naming.airflow_conn_id(TENANT, n) for n in validate_definition(definition).connection_names()
        },
        "description": body.get("description"),
        "owner": "alice@example.com",
        "tags": [f"tenant:{TENANT}", f"pipeline:{body['name']}", *body.get("tags", [])],
    }
    path = folder / naming.dag_file_name(dag_id)
    dagfile.write_atomic(path, dagfile.render(pipeline_id="p-" + body["name"], tenant=TENANT, config=config))
    return dag_id, path


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    folder = tmp_path_factory.mktemp("dags")
    bodies = {}
    for example in EXAMPLES:
        body = json.loads(example.read_text())
        dag_id, _ = publish(folder, body)
        bodies[dag_id] = body
    return folder, bodies


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2, EXAMPLES


def test_every_example_imports_with_zero_import_errors(published: tuple[Path, dict[str, dict[str, Any]]]) -> None:
    folder, bodies = published
    bag = DagBag(dag_folder=folder)
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == sorted(bodies)
    for dag_id, body in bodies.items():
        dag = bag.dags[dag_id]  # get_dag() would ask the metadata database
        assert dag.description == body.get("description")
        assert {f"tenant:{TENANT}", f"pipeline:{body['name']}", *body.get("tags", [])} <= set(dag.tags)
        assert dag.owner == "alice@example.com"
        assert all(task.doc_md for task in dag.tasks), [t.task_id for t in dag.tasks if not t.doc_md]
        definition = body["definition"]
        expected = {f"sources.{n}" for n in definition["sources"]} | {f"sinks.{n}" for n in definition["sinks"]}
        expected |= {f"transformations.{t['name']}" for t in definition.get("transformations", [])}
        expected |= {f"quality.{c['dataset']}" for c in definition.get("quality_checks", [])}
        assert expected <= set(dag.task_ids), sorted(expected - set(dag.task_ids))


def test_every_example_serialises_like_the_dag_processor_does_and_stays_the_same(
    published: tuple[Path, dict[str, dict[str, Any]]],
) -> None:
    folder, bodies = published
    first = {d: DagSerialization.to_dict(dag) for d, dag in DagBag(dag_folder=folder).dags.items()}
    again = {d: DagSerialization.to_dict(dag) for d, dag in DagBag(dag_folder=folder).dags.items()}
    assert sorted(first) == sorted(bodies)
    for dag_id in bodies:
        # no value that changes between parses (a version per parse in Airflow's DAG history)
        assert json.dumps(first[dag_id], sort_keys=True) == json.dumps(again[dag_id], sort_keys=True), dag_id


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_generated_file_has_no_runtime_varying_values(example: Path, tmp_path: Path) -> None:
    """Airflow's own static check of a DAG file (dag_processor.dag_version_inflation_check_level)."""
    _, path = publish(tmp_path, json.loads(example.read_text()))
    result = check_dag_file_stability(str(path))
    assert not result.runtime_varying_values, result.runtime_varying_values
