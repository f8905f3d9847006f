"""DagBag test: every example (and, later, template) definition, written as the service writes DAG
files, imports into Airflow with zero import errors — and one broken file does not hide the others."""

from __future__ import annotations

import json
from pathlib import Path

from airflow.dag_processing.dagbag import DagBag

from service.pipelines import dagfile

REPO = Path(__file__).resolve().parents[2]


def definitions() -> list[tuple[str, dict]]:
    found = [(p.stem, json.loads(p.read_text())) for p in sorted((REPO / "examples").glob("*.json"))]
    # Templates hold ${PARAM} placeholders: tests/dag_factory/test_templates_dagbag.py imports them rendered.
    return found


def write(folder: Path, name: str, definition: dict) -> None:
    names = {s["connection"] for g in ("sources", "sinks") for s in definition.get(g, {}).values()}
    config = {"dag_id": f"t.{name}", "definition": definition, "connections": {n: f"t.{n}" for n in names}}
    dagfile.write_atomic(folder / f"pipeline_{name}.py", dagfile.render(pipeline_id=name, tenant="t", config=config))


def test_every_example_definition_imports(tmp_path):
    found = definitions()
    assert found, "no example definitions found"
    for name, body in found:
        write(tmp_path, name, body.get("definition", body))
    bag = DagBag(dag_folder=tmp_path)
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == sorted(f"t.{n}" for n, _ in found)


def test_a_broken_file_only_breaks_itself(tmp_path):
    name, body = definitions()[0]
    write(tmp_path, name, body["definition"])
    (tmp_path / "pipeline_broken.py").write_text(
        "# an airflow dag file\nfrom dag_factory import load_pipeline_dag\n"
        'dag = load_pipeline_dag(\'{"dag_id": "t.broken"}\')\n'
    )
    bag = DagBag(dag_folder=tmp_path)
    assert list(bag.dag_ids) == [f"t.{name}"]
    assert [Path(p).name for p in bag.import_errors] == ["pipeline_broken.py"]
