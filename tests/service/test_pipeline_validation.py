"""POST /v1/pipelines/validate and GET /v1/pipelines/schema: checking a definition without saving it."""

from __future__ import annotations

from tests.service.helpers import Api, example, expect_error


def test_schema_is_the_definitions_json_schema(acme: Api) -> None:
    resp = acme.get("/v1/pipelines/schema")
    assert resp.status_code == 200, resp.text
    schema = resp.json()
    assert set(schema["properties"]) >= {"sources", "transformations", "sinks", "quality_checks", "orchestration"}
    assert "Aggregate" in schema["$defs"] and schema["additionalProperties"] is False


def test_a_valid_definition_is_valid_and_not_stored(acme: Api) -> None:
    resp = acme.post("/v1/pipelines/validate", json=example())
    assert resp.status_code == 200 and resp.json() == {"valid": True}
    assert acme.post("/v1/pipelines/validate", json={"definition": example()["definition"]}).json() == {"valid": True}
    assert acme.get("/v1/pipelines").json()["total"] == 0


def test_every_error_is_listed_with_its_path(acme: Api) -> None:
    d = example()["definition"]
    d["transformations"][0]["sql"] = "SELECT * FROM raw_transactions JOIN nowhere USING (id)"
    d["quality_checks"][0]["expectation"] = "expect_column_values_to_not_be_nul"
    d["sinks"]["daily_transactions"]["depends_on"] = ["ghost"]
    error = expect_error(acme.post("/v1/pipelines/validate", json={"definition": d}), 400, "validation_error")
    assert [e["path"] for e in error["details"]] == [
        "definition.transformations[0].sql",
        "definition.sinks.daily_transactions.depends_on[0]",
        "definition.quality_checks[0].expectation",
    ]
    assert "expect_column_values_to_not_be_null" in error["details"][2]["message"]


def test_unknown_connections_are_reported(acme: Api) -> None:
    d = example()["definition"]
    d["sources"]["products"]["connection"] = "nowhere"
    expect_error(
        acme.post("/v1/pipelines/validate", json={"definition": d}),
        400,
        "validation_error",
        "definition.sources.products.connection",
    )
