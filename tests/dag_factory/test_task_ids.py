"""The fake Airflow of the service's tests names a pipeline's tasks as the real builder does: the example,
published the way the service publishes it and parsed through Airflow's DagBag, has exactly the task ids
that the fake answers with for a run of that DAG file."""

from __future__ import annotations

import json
from pathlib import Path

from airflow.dag_processing.dagbag import DagBag

from dag_factory.spec import validate_definition
from service import naming
from service.airflow.client import AirflowClient
from service.pipelines import dagfile
from tests.service.fake_airflow import PASSWORD, USERNAME, FakeAirflow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "daily-sales-etl.json"
TENANT = "acme"


def _publish(folder: Path) -> str:
    body = json.loads(EXAMPLE.read_text())
    definition = body["definition"]
    dag_id = naming.dag_id(TENANT, body["name"])
    connections = {n: naming.airflow_conn_id(TENANT, n) for n in validate_definition(definition).connection_names()}
    config = {"dag_id": dag_id, "definition": definition, "connections": connections, "tags": [f"tenant:{TENANT}"]}
    path = folder / naming.dag_file_name(dag_id)
    dagfile.write_atomic(path, dagfile.render(pipeline_id="p-" + body["name"], tenant=TENANT, config=config))
    return dag_id


def test_the_fake_airflow_answers_with_the_builders_task_ids(tmp_path: Path) -> None:
    dag_id = _publish(tmp_path)
    bag = DagBag(dag_folder=tmp_path)
    assert bag.import_errors == {}
    built = set(bag.dags[dag_id].task_ids)

    fake = FakeAirflow(tmp_path)
    fake._rescan()  # what the dag-processor does after a parse request
    airflow = AirflowClient("http://airflow.test", USERNAME, lambda: PASSWORD, transport=fake.transport())
    try:
        airflow.trigger(dag_id, "run-1", {})
        answered = [t.task_id for t in airflow.task_instances(dag_id, "run-1")]
    finally:
        airflow.close()
    assert len(answered) == len(set(answered))
    assert set(answered) == built, (sorted(built - set(answered)), sorted(set(answered) - built))
