"""The definition language: what it accepts, and errors that name the JSON path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import get_args

import pytest

from dag_factory.exceptions import DefinitionError
from dag_factory.spec import models, validate_definition, validate_parameters
from dag_factory.spec.validate import TEMPLATED_FIELDS, templated_fields

EXAMPLE = json.loads((Path(__file__).resolve().parents[2] / "examples" / "daily-sales-etl.json").read_text())


def definition(**changes):
    d = copy.deepcopy(EXAMPLE["definition"])
    d.update(changes)
    return d


def paths(data) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        validate_definition(data)
    return [e["path"] for e in info.value.errors]


def test_the_example_is_valid():
    d = validate_definition(EXAMPLE["definition"])
    assert list(d.sources) == ["raw_transactions", "products"]
    assert d.staging_connection() == "warehouse"
    assert d.connection_names() == ["sales-database", "warehouse"]


def test_unknown_keys_are_rejected_with_their_path():
    d = definition()
    d["sources"]["products"]["colour"] = "red"
    d["orchestration"]["retires"] = 3
    assert paths(d) == ["sources.products.colour", "orchestration.retires"]


def test_missing_and_mistyped_fields_name_their_path():
    d = definition()
    del d["sinks"]
    assert paths(d) == ["sinks"]
    d = definition()
    d["transformations"][1]["on"] = "product_id"
    assert paths(d) == ["transformations[1].on"]
    d = definition()
    d["sources"]["products"]["type"] = "oracle"
    assert paths(d) == ["sources.products"]


def test_merge_needs_keys():
    d = definition()
    del d["sinks"]["daily_transactions"]["keys"]
    assert paths(d) == ["sinks.daily_transactions"]


def test_references_must_resolve():
    d = definition()
    d["transformations"][0]["inputs"] = ["raw_transactions", "nope"]
    d["transformations"][1]["lookup"] = "missing"
    d["sinks"]["daily_transactions"]["input"] = "ghost"
    d["quality_checks"][0]["dataset"] = "nowhere"
    assert paths(d) == [
        "transformations[0].inputs[1]",
        "transformations[1].lookup",
        "sinks.daily_transactions.input",
        "quality_checks[0].dataset",
    ]


def test_a_transformation_cannot_read_a_later_one_or_reuse_a_name():
    d = definition()
    d["transformations"][0]["inputs"] = ["enrich_with_products"]
    d["transformations"][1]["name"] = "products"
    errors = paths(d)
    assert "transformations[0].inputs[0]" in errors and "transformations[1].name" in errors


def test_dataset_names_must_be_sql_identifiers():
    d = definition()
    d["sources"]["Raw-Transactions"] = d["sources"].pop("raw_transactions")
    assert "sources.Raw-Transactions.[key]" in paths(d)


def test_parameter_defaults_are_checked_against_their_schema():
    d = definition()
    d["parameters"]["start_date"]["default"] = "last tuesday"
    assert paths(d) == ["parameters.start_date.default"]


def test_run_parameters_are_merged_over_defaults_and_checked():
    d = validate_definition(EXAMPLE["definition"])
    assert validate_parameters(d, {"end_date": "2026-03-01"}) == {"start_date": "2026-02-01", "end_date": "2026-03-01"}
    with pytest.raises(DefinitionError) as info:
        validate_parameters(d, {"start_date": "yesterday", "region": "eu"})
    assert [e["path"] for e in info.value.errors] == ["parameters.region", "parameters.start_date"]


def test_required_parameter_without_default():
    declared = EXAMPLE["definition"]["parameters"]  # its where uses them: a template names declared ones only
    d = validate_definition(definition(parameters={**declared, "region": {"type": "string", "required": True}}))
    with pytest.raises(DefinitionError) as info:
        validate_parameters(d, {})
    assert info.value.errors == [{"path": "parameters.region", "message": "required parameter is missing"}]


# Every class of the discriminated unions (Annotated[A | B | ..., discriminator]).
STEP_CLASSES = [
    cls for union in (models.Source, models.Transformation, models.Sink) for cls in get_args(get_args(union)[0])
]


@pytest.mark.parametrize("cls", STEP_CLASSES, ids=lambda c: c.__name__)
def test_templated_fields_are_every_templated_field_of_the_step(cls):
    """validate.templated_fields names each step type's templated fields itself: it must give every one of
    TEMPLATED_FIELDS (the operators' template_fields) that the type has, in that order."""
    fields = [f for f in TEMPLATED_FIELDS if f in cls.model_fields]
    step = cls.model_construct(**{f: f"value of {f}" for f in fields})
    assert templated_fields(step) == [(f, f"value of {f}") for f in fields]


@pytest.mark.parametrize("value", ["eu\x00", "eu\x1b[31m", ["eu", "x\x7f"], {"k\x01": "v"}])
def test_a_run_parameter_with_a_control_character_is_refused(value: object) -> None:
    declared = EXAMPLE["definition"]["parameters"]
    kind = {str: "string", list: "array", dict: "object"}[type(value)]
    d = validate_definition(definition(parameters={**declared, "region": {"type": kind}}))
    with pytest.raises(DefinitionError) as info:
        validate_parameters(d, {"region": value})
    assert [e["path"] for e in info.value.errors] == ["parameters.region"]
    assert "control character U+00" in info.value.errors[0]["message"]
    assert validate_parameters(d, {"region": "line one\nline\ttwo"} if kind == "string" else {})  # tab, newline: fine
