"""Issue 11, finding 1 (rendering side): our operators render user text with the restricted environment of
dag_factory.spec.templating, whatever Airflow puts in the context: only params and the run's time values are
in reach; `conn`, `var`, `ti`, `macros`, `dag` are not, attributes cannot be walked, nothing can be called."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pendulum
import pytest
from airflow.sdk.definitions.param import Param, ParamsDict
from airflow.sdk.exceptions import AirflowFailException

from dag_factory.operators import PythonStepOperator, SqlTransformOperator, StageHttpOperator, StageTableOperator
from dag_factory.spec.templating import ENVIRONMENT, render, template_context

SECRET = "postgres://a:tenant-A-password@db/a"
LOGICAL = pendulum.datetime(2026, 3, 4, 5, 6, 7)


class Leaky:
    """Stands for Airflow's accessors: anything reaching it leaks SECRET."""

    def get(self, *_: Any, **__: Any) -> Any:
        return SimpleNamespace(get_uri=lambda: SECRET, password=SECRET)

    def __getattr__(self, _: str) -> Any:
        return SECRET

    def __str__(self) -> str:
        return SECRET


def airflow_context(**params: Any) -> dict[str, Any]:
    """What Airflow hands render_template_fields: params as a ParamsDict and everything else besides."""
    leaky = Leaky()
    return {
        "params": ParamsDict({k: Param(v) for k, v in params.items()}),
        "run_id": "manual__2026-03-04",
        "ds": LOGICAL.strftime("%Y-%m-%d"),
        "ds_nodash": LOGICAL.strftime("%Y%m%d"),
        "ts": LOGICAL.isoformat(),
        "ts_nodash": LOGICAL.strftime("%Y%m%dT%H%M%S"),
        "logical_date": LOGICAL,
        "data_interval_start": LOGICAL,
        "data_interval_end": LOGICAL.add(days=1),
        "dag": SimpleNamespace(dag_id="tenant-b.orders", leak=SECRET),
        **{name: leaky for name in ("conn", "var", "ti", "task_instance", "macros", "task", "dag_run", "conf")},
    }


def sql_task(sql: str) -> SqlTransformOperator:
    return SqlTransformOperator(task_id="transformations.t", staging_conn_id="b.wh", dataset="t", sql=sql)


def rendered_sql(sql: str, **params: Any) -> str:
    task = sql_task(sql)
    task.render_template_fields(airflow_context(**params))
    return str(task.sql)


def test_params_and_run_values_render() -> None:
    sql = (
        "SELECT '{{ params.since }}', {{ params['limit'] }}, '{{ ds }}', '{{ ds_nodash }}', '{{ ts }}', "
        "'{{ ts_nodash }}', '{{ logical_date }}', '{{ data_interval_end }}', '{{ run_id }}', '{{ dag_id }}', "
        "'{{ params.since | replace('-', '') }}'"
    )
    assert rendered_sql(sql, since="2026-01-01", limit=5) == (
        "SELECT '2026-01-01', 5, '2026-03-04', '20260304', '2026-03-04T05:06:07+00:00', '20260304T050607', "
        "'2026-03-04 05:06:07+00:00', '2026-03-05 05:06:07+00:00', 'manual__2026-03-04', 'tenant-b.orders', "
        "'20260101'"
    )


@pytest.mark.parametrize(
    "template",
    [
        '{{ conn.get("tenant-a.warehouse").get_uri() }}',
        "{{ conn }}",
        "{{ var.value.secret }}",
        '{{ ti.xcom_pull(dag_id="tenant-a.orders", task_ids="x") }}',
        "{{ task_instance }}",
        "{{ macros.ds_add(ds, 1) }}",
        "{{ dag.leak }}",
        "{{ dag_run.conf }}",
        "{{ conf }}",
        "{{ params.__class__ }}",
        "{{ params.since.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ params.items() }}",
        "{{ ds.upper() }}",
        "{{ logical_date.tzinfo }}",
        "{{ range(3) }}",
        "{{ lipsum() }}",
        "{{ params.since | attr('upper') }}",
        "{{ cycler }}",
    ],
)
def test_airflow_context_and_attribute_walking_are_out_of_reach(template: str) -> None:
    with pytest.raises(AirflowFailException) as info:
        rendered_sql(f"SELECT '{template}'", since="2026-01-01")
    assert "template of 'sql' refused" in str(info.value) and SECRET not in str(info.value)


def test_a_parameter_value_is_data_never_rendered_again() -> None:
    value = '{{ conn.get("tenant-a.warehouse").get_uri() }}'
    assert rendered_sql("SELECT '{{ params.note }}'", note=value) == f"SELECT '{value}'"


def test_nested_options_are_rendered_keys_and_non_strings_kept() -> None:
    task = PythonStepOperator(
        task_id="transformations.p",
        staging_conn_id="b.wh",
        dataset="p",
        callable_path="dag_factory.callables.union_all",
        inputs=["x"],
        options={
            "{{ ds }}": 1,
            "deep": ["{{ params.since }}", {"when": "{{ ds_nodash }}", "n": 2.5}],
            "t": ("{{ ds }}",),
        },
    )
    task.render_template_fields(airflow_context(since="2026-01-01"))
    assert task.options == {"{{ ds }}": 1, "deep": ["2026-01-01", {"when": "20260304", "n": 2.5}], "t": ("2026-03-04",)}
    task.options = {"deep": [{"x": "{{ conn.get('a').password }}"}]}
    with pytest.raises(AirflowFailException):
        task.render_template_fields(airflow_context())


def test_every_templated_operator_uses_the_restricted_environment() -> None:
    http = StageHttpOperator(
        task_id="sources.api", conn_id="b.api", staging_conn_id="b.wh", dataset="api", path="/x/{{ ds }}",
        params_={"q": "{{ params.since }}", "page": 1},
    )  # fmt: skip
    http.render_template_fields(airflow_context(since="s"))
    assert (http.path, http.params_) == ("/x/2026-03-04", {"q": "s", "page": 1})
    table = StageTableOperator(
        task_id="sources.t", source_conn_id="b.db", staging_conn_id="b.wh", table="t", dataset="t",
        where="x = '{{ var.value.get(\"k\") }}'",
    )  # fmt: skip
    with pytest.raises(AirflowFailException):
        table.render_template_fields(airflow_context())


def test_a_manual_run_has_no_time_values_as_in_airflow() -> None:
    context = airflow_context()
    for name in ("ds", "ts", "logical_date", "data_interval_start"):
        context.pop(name)
    task = sql_task("SELECT '{{ ds }}'")
    with pytest.raises(AirflowFailException, match="'ds' is undefined"):
        task.render_template_fields(context)


def test_the_environment_alone_refuses_what_validation_refuses() -> None:
    """The guard for a definition validation never saw (stored before it, a DAG file edited by hand)."""
    context = template_context({"x": "v"}, {"ds": "2026-01-01"})
    assert set(context) == {"params", "ds"} and ENVIRONMENT.globals == {}
    assert render("{{ params.x }}-{{ params['x'] }}-{{ ds }}", context) == "v-v-2026-01-01"
    for bad in ("{{ params.x.__class__ }}", "{{ params.keys() }}", "{{ ''.join }}", "{{ params.x|format }}"):
        with pytest.raises(Exception) as info:
            render(bad, context)
        assert type(info.value).__module__.startswith("jinja2"), bad


def test_every_templated_operator_field_is_validated_and_rendered_restricted() -> None:
    """validate.TEMPLATED_FIELDS mirrors the operators' template_fields (http `params` is `params_` there,
    an s3 `prefix` is `path`); and every operator with template fields renders through PipelineOperator."""
    import inspect

    from dag_factory import operators
    from dag_factory.operators.base import PipelineOperator
    from dag_factory.spec.validate import TEMPLATED_FIELDS

    classes = [c for c in vars(operators).values() if inspect.isclass(c) and getattr(c, "template_fields", ())]
    assert classes
    for cls in classes:
        assert issubclass(cls, PipelineOperator), cls
        assert {f.rstrip("_") for f in cls.template_fields} <= set(TEMPLATED_FIELDS), cls
