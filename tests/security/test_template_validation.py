"""Issue 11, findings 1 and 8 (validation side): what a template in a definition may contain, the shape of
user SQL (one SELECT; a predicate that stays in its parentheses) and the python allow-list. Each refusal is
a DefinitionError naming the JSON path of the field (the service answers 400 with it)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from dag_factory.exceptions import DefinitionError
from dag_factory.spec import validate_definition
from dag_factory.spec.sqlcheck import predicate_errors, select_errors
from dag_factory.spec.templating import template_errors
from dag_factory.spec.validate import callable_allowed
from service.templates import catalog

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((REPO / "examples" / "daily-sales-etl.json").read_text())["definition"]
A_CONN = "tenant-a.warehouse"


def errors_of(d: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as info:
        validate_definition(d)
    return [(e["path"], e["message"]) for e in info.value.errors]


def with_where(where: str) -> dict[str, Any]:
    d = copy.deepcopy(EXAMPLE)
    d["sources"]["raw_transactions"]["where"] = where
    return d


def with_sql(sql: str) -> dict[str, Any]:
    d = copy.deepcopy(EXAMPLE)
    d["transformations"][0]["sql"] = sql
    return d


def with_step(step: dict[str, Any]) -> dict[str, Any]:
    d = copy.deepcopy(EXAMPLE)
    d["transformations"].append(step)
    return d


# -- templates --------------------------------------------------------------------------------------
HOSTILE = [
    f'{{{{ conn.get("{A_CONN}").get_uri() }}}}',
    f"{{{{ conn['{A_CONN}'].password }}}}",
    '{{ ti.xcom_pull(dag_id="tenant-a.orders", task_ids="sources.orders") }}',
    "{{ var.value.secret }}",
    "{{ var.json.get('x') }}",
    "{{ macros.datetime.now() }}",
    "{{ dag.dag_id }}",
    "{{ task.owner }}",
    "{{ params.__class__ }}",
    "{{ params.start_date.__class__ }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ params['start_date'].upper() }}",
    "{{ params.start_date | attr('__class__') }}",
    "{{ params.start_date | map('upper') | list }}",
    "{{ params.start_date | default(conn) }}",
    "{{ lipsum() }}",
    "{{ range(10) | list }}",
    "{{ params.undeclared }}",
    "{{ params }}",
    "{{ params.start_date ~ ds }}",
    "{% for c in conn %}{{ c }}{% endfor %}",
    "{% set x = conn %}",
    "{% include 'x' %}",
    "{{ ds",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_hostile_template_in_a_where_is_refused_naming_the_field(text: str) -> None:
    found = errors_of(with_where(f"created_at >= '{text}'"))
    assert found and {path for path, _ in found} == {"sources.raw_transactions.where"}, found


@pytest.mark.parametrize("text", HOSTILE[:9])
def test_hostile_templates_are_refused_in_every_templated_field(text: str) -> None:
    """sql, filter conditions, python options (nested), http query values, paths, globs, prefixes."""
    cases = {
        "transformations[0].sql": with_sql(f"SELECT '{text}'::text AS leak FROM raw_transactions"),
        "transformations[2].condition": with_step(
            {"name": "f", "type": "filter", "input": "products", "condition": f"category = '{text}'"}
        ),
        "transformations[2].options.deep[1].note": with_step(
            {
                "name": "p",
                "type": "python",
                "callable": "dag_factory.callables.union_all",
                "inputs": ["products"],
                "options": {"deep": ["fine", {"note": text}]},
            }
        ),
    }
    http = copy.deepcopy(EXAMPLE)
    http["sources"]["api"] = {"type": "http", "connection": "api", "path": "/items", "params": {"q": text}}
    cases["sources.api.params.q"] = http
    files = copy.deepcopy(EXAMPLE)
    files["sources"]["files"] = {"type": "file", "path": f"in/{text}", "glob": f"*{text}", "format": "csv"}
    files["sinks"]["out"] = {
        "type": "s3",
        "connection": "s3",
        "bucket": "bkt",
        "prefix": f"p/{text}",
        "input": "products",
    }
    cases["sources.files.path"] = cases["sources.files.glob"] = cases["sinks.out.prefix"] = files
    for path, d in cases.items():
        assert path in {p for p, _ in errors_of(d)}, (path, errors_of(d))


def test_the_message_says_what_is_allowed() -> None:
    [(path, message)] = errors_of(with_sql("SELECT '{{ conn.get(\"x\") }}'::text FROM raw_transactions"))
    assert path == "transformations[0].sql" and "'conn' is not available" in message and "params.<name>" in message
    assert template_errors("{{ params.x.y }}", {"x"}) == ["attribute or item access is only allowed as params.<name>"]
    assert "unknown parameter 'nope'" in template_errors("{{ params.nope }}", {"x"})[0]


ALLOWED = [
    "{{ params.start_date }}",
    "{{ params['end_date'] }}",
    "{{ ds }}{{ ds_nodash }}{{ ts }}{{ ts_nodash }}",
    "{{ logical_date }} {{ data_interval_start }} {{ data_interval_end }}",
    "{{ run_id }} {{ dag_id }}",
    "{{ params.start_date | default('2020-01-01') | trim | upper }}",
    "{{ params.start_date | replace('-', '') }}",
    "{{ 42 }}",
    "{# a comment #}",
    "{{- params.start_date -}}",
]


@pytest.mark.parametrize("text", ALLOWED)
def test_params_and_time_values_are_allowed(text: str) -> None:
    validate_definition(with_where(f"created_at >= '{text}'"))
    assert template_errors(text, {"start_date", "end_date"}) == []


def test_shipped_templates_and_examples_validate() -> None:
    """All 24 templates (rendered with their defaults and compliance packs) and every example."""
    templates = catalog.shipped()
    assert len(templates) >= 24
    for template in templates.values():
        definition, _ = catalog.render(template)
        validate_definition(definition)
    for path in sorted((REPO / "examples").glob("*.json")):
        doc = json.loads(path.read_text())
        validate_definition(doc.get("definition", doc))


# -- one SELECT -------------------------------------------------------------------------------------
BAD_SELECTS = [
    "SELECT * FROM raw_transactions; DROP TABLE raw_transactions",
    "SELECT 1 FROM raw_transactions; SELECT pg_sleep(100)",
    "DELETE FROM raw_transactions RETURNING *",
    "UPDATE raw_transactions SET amount = 0 RETURNING *",
    "INSERT INTO raw_transactions SELECT * FROM raw_transactions",
    "WITH d AS (DELETE FROM raw_transactions RETURNING *) SELECT * FROM d",
    "WITH a AS (SELECT 1) DELETE FROM raw_transactions",
    "SELECT * INTO stolen FROM raw_transactions",
    "DROP TABLE raw_transactions",
    "this is not SQL at all",
    "SELECT * FROM raw_transactions WHERE note = 'unterminated",
    "SELECT * FROM raw_transactions -- and a comment swallowing what follows",
    "SELECT * FROM raw_transactions) AS q, pg_tables AS (SELECT 1",
    "COPY raw_transactions TO PROGRAM 'id'",
    "SELECT 1 /* unterminated",
]


@pytest.mark.parametrize("sql", BAD_SELECTS)
def test_a_sql_transformation_is_exactly_one_select(sql: str) -> None:
    found = errors_of(with_sql(sql))
    assert [p for p, _ in found] == ["transformations[0].sql"], found


@pytest.mark.parametrize("sql", BAD_SELECTS)
def test_a_source_query_is_exactly_one_select(sql: str) -> None:
    d = copy.deepcopy(EXAMPLE)
    d["sources"]["q"] = {"type": "sql", "connection": "sales-database", "query": sql.replace("raw_transactions", "t")}
    assert "sources.q.query" in {p for p, _ in errors_of(d)}


GOOD_SELECTS = [
    "SELECT * FROM raw_transactions;",
    "  select amount FROM raw_transactions  ",
    "WITH x AS (SELECT * FROM raw_transactions) SELECT * FROM x",
    "(SELECT amount FROM raw_transactions) UNION ALL (SELECT amount FROM raw_transactions)",
    "SELECT ';' AS semi, $$ ; ) $$ AS dollars, E'it\\'s ; )' AS escaped, \"a;b\" FROM raw_transactions",
    "SELECT amount -- a comment ; )\nFROM raw_transactions /* nested /* ; */ ) */",
    "SELECT '{{ params.start_date }}'::date AS d, amount FROM raw_transactions",
]


@pytest.mark.parametrize("sql", GOOD_SELECTS)
def test_one_select_with_literals_and_comments_passes(sql: str) -> None:
    validate_definition(with_sql(sql))
    assert select_errors(sql) == []


# -- predicates -------------------------------------------------------------------------------------
BAD_PREDICATES = [
    "true) UNION ALL SELECT * FROM pg_catalog.pg_authid WHERE (true",
    "true) UNION ALL SELECT usename, passwd FROM pg_shadow --",
    "amount > 0; DROP TABLE raw_transactions",
    "amount > 0)",
    "(amount > 0",
    "amount > 0 -- swallows the closing parenthesis",
    "amount > 0 /* unterminated",
    "amount > 'unterminated",
    "not sql at all !!",
]


@pytest.mark.parametrize("predicate", BAD_PREDICATES)
def test_a_where_is_one_predicate_inside_its_parentheses(predicate: str) -> None:
    assert [p for p, _ in errors_of(with_where(predicate))] == ["sources.raw_transactions.where"]


@pytest.mark.parametrize("predicate", [*BAD_PREDICATES, "  "])  # a blank where is no where; a blank condition is
def test_a_filter_condition_is_one_predicate(predicate: str) -> None:
    d = with_step({"name": "f", "type": "filter", "input": "products", "condition": predicate})
    assert "transformations[2].condition" in {p for p, _ in errors_of(d)}


GOOD_PREDICATES = [
    "amount > 0 OR (category = 'x' AND amount < 10)",
    "note = ')' AND note <> '(;'",
    "created_at >= '{{ params.start_date }}' -- till now\n",
    "id IN (SELECT product_id FROM raw_transactions)",
]


@pytest.mark.parametrize("predicate", GOOD_PREDICATES)
def test_good_predicates_pass(predicate: str) -> None:
    assert predicate_errors(predicate) == []


# -- python callables -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "dag_factory.callables.__builtins__",
        "dag_factory.callables.__loader__",
        "dag_factory.callables._private",
        "dag_factory.callables.sql",  # a module it imports
        "dag_factory.callables.PostgresHook",  # a class it imports
        "dag_factory.callables.union_all.__globals__",
        "dag_factory.callables_evil.union_all",
        "dag_factory.callables.nope",
    ],
)
def test_only_public_functions_of_an_allowed_module_are_callable(path: str) -> None:
    assert not callable_allowed(path)
    step = {"name": "p", "type": "python", "callable": path, "inputs": ["products"]}
    assert "transformations[2].callable" in {p for p, _ in errors_of(with_step(step))}


def test_a_public_function_of_the_allowed_module_is_callable() -> None:
    assert callable_allowed("dag_factory.callables.union_all")
