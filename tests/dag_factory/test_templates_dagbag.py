"""Every shipped template, rendered with its default parameters (compliance controls included), is a valid
definition and imports into Airflow's DagBag with zero import errors, written as the service writes DAG files.
Also: the template files themselves (ids, parameters, placeholders), and the `mask` step on PostgreSQL."""

from __future__ import annotations

import json
import re
from pathlib import Path

import psycopg
import pytest
from airflow.dag_processing.dagbag import DagBag

from dag_factory.builder.sql import mask_sql
from dag_factory.spec import validate_definition
from dag_factory.spec.models import Mask
from service.pipelines import dagfile
from service.templates import catalog
from service.templates.compliance import CATEGORY_PACK
from tests.pg import pg_url

REPO = Path(__file__).resolve().parents[2]
FILES = sorted((REPO / "templates" / "industries").glob("*/*.json"))


def test_the_catalogue_has_24_templates_in_8_industries() -> None:
    templates = catalog.shipped()
    assert len(templates) == len(FILES) >= 24
    by_industry: dict[str, int] = {}
    for t in templates.values():
        by_industry[t.industry] = by_industry.get(t.industry, 0) + 1
    assert len(by_industry) >= 8 and min(by_industry.values()) >= 3, by_industry


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_template_file_is_complete_and_renders_with_defaults(path: Path) -> None:
    doc = json.loads(path.read_text())
    template = catalog.Template.model_validate(doc)
    assert template.id == f"{path.parent.name}/{path.stem}" and re.fullmatch(r"\d+\.\d+\.\d+", template.version)
    for name, p in template.parameters.items():
        assert p.description and (p.default is not None or p.required), name
    assert set(re.findall(r"\$\{([A-Z0-9_]+)\}", json.dumps(doc["definition"]))) <= set(template.parameters)
    definition, params = catalog.render(template)
    assert "${" not in json.dumps(definition)
    validate_definition(definition)  # SQL references included
    for column, item in template.sensitive_columns().items():
        assert CATEGORY_PACK[item.category] in template.compliance, column


def write(folder: Path, name: str, definition: dict) -> None:
    names = {s["connection"] for g in ("sources", "sinks") for s in definition.get(g, {}).values()}
    config = {"dag_id": f"t.{name}", "definition": definition, "connections": {n: f"t.{n}" for n in names}}
    dagfile.write_atomic(folder / f"pipeline_{name}.py", dagfile.render(pipeline_id=name, tenant="t", config=config))


def test_every_template_imports_into_a_dagbag(tmp_path: Path) -> None:
    templates = catalog.shipped()
    for template_id, template in templates.items():
        definition, _ = catalog.render(template)
        write(tmp_path, template_id.replace("/", "__"), definition)
    bag = DagBag(dag_folder=tmp_path)
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == sorted(f"t.{tid.replace('/', '__')}" for tid in templates)
    dag = bag.dags["t.fintech__payment_processing"]
    assert {"transformations.with_merchant_risk_masked", "sinks.sox_audit"} <= set(dag.task_dict)


def test_mask_rewrites_only_the_named_columns_in_postgresql(make_database) -> None:  # type: ignore[no-untyped-def]
    sql = mask_sql(
        Mask(
            name="m",
            type="mask",
            input="cards",
            columns={"card_number": "last4", "email": "hash", "ssn": "redact", "amount": "null", "absent": "hash"},
        )
    )
    with psycopg.connect(pg_url(make_database("mask")), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE cards AS SELECT 1 AS id, '4111111111111111'::text AS card_number, 'a@b.c'::text AS email,"
            " NULL::text AS ssn, 12.5::numeric AS amount, 'keep'::text AS note"
        )
        conn.execute(f"CREATE TABLE masked AS {sql}")
        cols = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'masked' ORDER BY ordinal_position"
            )
        ]
        row = conn.execute("SELECT * FROM masked").fetchone()
    assert cols == ["id", "card_number", "email", "ssn", "amount", "note"]
    assert row is not None
    assert row[0] == 1 and row[1] == "************1111" and len(row[2]) == 64 and row[3] is None
    assert row[4] is None and row[5] == "keep"
