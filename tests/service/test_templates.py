"""Templates API: catalogue filters, create from a template (parameters, customizations, 400s), compliance
controls that customizations cannot remove, provenance (behind + diff), tenant-private templates."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from service.templates import catalog
from tests.service.helpers import Api, Service, expect_error

PAYMENTS = "fintech/payment_processing"


@pytest.fixture
def clean(svc: Service) -> Service:
    """The PostgreSQL database is shared by the module: start without tenant templates."""
    if svc.settings.sqlalchemy_url.startswith("postgresql"):
        with svc.app.state.engine.begin() as conn:
            conn.execute(text("DELETE FROM tenant_templates"))
    return svc


@pytest.fixture
def tenant(clean: Service) -> Api:
    """acme's admin with the connections the templates default to."""
    api = clean.api("acme")
    api.create_connection("source-db")
    api.create_connection("warehouse")
    return api


def create(api: Api, template_id: str = PAYMENTS, **body: Any) -> Any:
    body.setdefault("pipelineName", "payments")
    return api.post(f"/v1/pipelines/templates/{template_id}/create", json=body)


def tenant_template(version: str = "1.0.0", retries: int = 1, **changes: Any) -> dict[str, Any]:
    """A tenant template derived from a shipped one."""
    doc = json.loads((catalog.templates_dir() / "retail" / "inventory_snapshot.json").read_text())
    doc["definition"]["orchestration"]["retry_delay_seconds"] = 30 + retries
    doc.update({"id": "acme/stock", "name": "Acme stock", "version": version, **changes})
    return doc


# ------------------------------------------------------------------------------------------ catalogue


def test_list_filters_and_pages(tenant: Api) -> None:
    everything = tenant.get("/v1/pipelines/templates", params={"size": 200}).json()
    assert everything["total"] >= 24 and len(everything["items"]) == everything["total"]
    industries = {t["industry"] for t in everything["items"]}
    assert len(industries) >= 8
    assert all(sum(t["industry"] == i for t in everything["items"]) >= 3 for i in industries)

    fintech = tenant.get("/v1/pipelines/templates", params={"industry": "fintech"}).json()
    assert fintech["total"] >= 3 and {t["industry"] for t in fintech["items"]} == {"fintech"}
    payments = next(t for t in fintech["items"] if t["id"] == PAYMENTS)
    assert payments["compliance"] == ["PCI-DSS", "SOX"] and payments["owner"] == "shipped"
    source = next(p for p in payments["parameters"] if p["name"] == "SOURCE_CONNECTION")
    assert source["default"] == "source-db" and source["type"] == "string" and source["required"] is False

    hipaa = tenant.get("/v1/pipelines/templates", params={"compliance": "hipaa"}).json()
    assert hipaa["total"] >= 3 and all("HIPAA" in t["compliance"] for t in hipaa["items"])
    both = tenant.get("/v1/pipelines/templates", params={"compliance": "PCI-DSS,SOX"}).json()
    assert [t["id"] for t in both["items"]] == [PAYMENTS]

    fraud = tenant.get("/v1/pipelines/templates", params={"q": "fraud"}).json()
    assert {"fintech/fraud_alerts", PAYMENTS, "insurance/claims_fraud_scoring"} <= {t["id"] for t in fraud["items"]}
    assert tenant.get("/v1/pipelines/templates", params={"industry": "nope"}).json()["total"] == 0

    page = tenant.get("/v1/pipelines/templates", params={"page": 1, "size": 5}).json()
    assert (page["page"], page["size"], page["total"]) == (1, 5, everything["total"])
    assert [t["id"] for t in page["items"]] == [t["id"] for t in everything["items"][5:10]]
    expect_error(tenant.get("/v1/pipelines/templates", params={"size": 500}), 400, "validation_error", "size")


def test_get_a_template_by_an_id_with_a_slash(tenant: Api) -> None:
    body = tenant.get(f"/v1/pipelines/templates/{PAYMENTS}").json()
    assert body["id"] == PAYMENTS and body["version"] == "1.0.0"
    assert body["sensitive"] == {"card_number": {"category": "pan", "sinks": ["payment_events"]}}
    assert body["definition"]["sources"]["payment_gateway"]["connection"] == "${SOURCE_CONNECTION}"
    assert {"AUDIT_TABLE", "SOURCE_CONNECTION", "TARGET_TABLE"} <= {p["name"] for p in body["parameters"]}
    expect_error(tenant.get("/v1/pipelines/templates/fintech/nope"), 404, "not_found")
    expect_error(tenant.get(f"/v1/pipelines/templates/{PAYMENTS}", params={"version": "0.9.0"}), 404, "not_found")
    packs = tenant.get("/v1/pipelines/templates/compliance-packs").json()
    assert {p["tag"] for p in packs} == {"PCI-DSS", "HIPAA", "GDPR", "SOX"}


# ------------------------------------------------------------------------------------------ create


def test_create_from_a_template_goes_through_the_pipelines_path(svc: Service, tenant: Api) -> None:
    resp = create(tenant, parameters={"TARGET_TABLE": "dw.payments"}, customizations={"orchestration.retries": 3})
    assert resp.status_code == 201, resp.text
    pipeline = resp.json()
    assert pipeline["status"] == "CREATED" and pipeline["name"] == "payments" and pipeline["version"] == "1.0.0"
    assert pipeline["tags"] == ["fintech", "template", "PCI-DSS", "SOX"]
    assert pipeline["template"] == {"id": PAYMENTS, "version": "1.0.0", "latestVersion": "1.0.0", "behind": False}
    definition = pipeline["definition"]
    assert definition["sinks"]["payment_events"]["table"] == "dw.payments"
    assert definition["sinks"]["payment_events"]["connection"] == "warehouse"
    assert definition["orchestration"]["retries"] == 3
    assert "${" not in json.dumps(definition)
    svc.publish()
    assert tenant.pipeline(pipeline["pipelineId"])["status"] == "ACTIVE"
    assert f'"template:{PAYMENTS}"' in svc.dag_file(pipeline["dagId"]).read_text()  # a DAG tag in Airflow's UI
    listed = tenant.get("/v1/pipelines").json()["items"]
    assert [p["template"]["id"] for p in listed] == [PAYMENTS]
    # The same name again is the pipelines service's 409.
    expect_error(create(tenant), 409, "conflict", "name")


def test_parameters_are_typed_and_named_in_errors(tenant: Api) -> None:
    error = expect_error(create(tenant, parameters={"RETRIES": "three"}), 400, "validation_error", "parameters.RETRIES")
    assert "integer" in error["message"]
    expect_error(create(tenant, parameters={"RETRIES": True}), 400, "validation_error", "parameters.RETRIES")
    expect_error(create(tenant, parameters={"RETRIES": 99}), 400, "validation_error", "parameters.RETRIES")
    expect_error(create(tenant, parameters={"NOPE": 1}), 400, "validation_error", "parameters.NOPE")
    bad_table = create(tenant, parameters={"TARGET_TABLE": "x; drop table y"})
    expect_error(bad_table, 400, "validation_error", "parameters.TARGET_TABLE")
    # A connection the tenant does not have: the pipelines service's own check names the definition path.
    expect_error(
        create(tenant, parameters={"SOURCE_CONNECTION": "other-db"}),
        400,
        "validation_error",
        "definition.sources.payment_gateway.connection",
    )
    expect_error(create(tenant, pipelineName="bad name"), 400, "validation_error", "pipelineName")


def test_a_required_parameter_without_a_default_must_be_given(tenant: Api) -> None:
    doc = tenant_template()
    doc["parameters"]["TARGET_TABLE"] = {"type": "string", "required": True, "description": "where to"}
    assert tenant.post("/v1/pipelines/templates", json=doc).status_code == 201, doc
    error = expect_error(create(tenant, "acme/stock"), 400, "validation_error", "parameters.TARGET_TABLE")
    assert "required" in error["message"]
    expect_error(
        create(tenant, "acme/stock", parameters={"TARGET_TABLE": None}),
        400,
        "validation_error",
        "parameters.TARGET_TABLE",
    )
    resp = create(tenant, "acme/stock", parameters={"TARGET_TABLE": "dw.stock"})
    assert resp.status_code == 201, resp.text
    assert resp.json()["definition"]["sinks"]["inventory_snapshots"]["table"] == "dw.stock"


def test_customizations_take_dotted_paths_and_unknown_ones_are_400(tenant: Api) -> None:
    resp = create(
        tenant,
        customizations={
            "sources.payment_gateway.partitions": 4,
            "transformations.with_merchant_risk.how": "inner",
            "quality_checks.amount_positive.severity": "warn",
        },
    )
    assert resp.status_code == 201, resp.text
    d = resp.json()["definition"]
    assert d["sources"]["payment_gateway"]["partitions"] == 4
    assert next(t for t in d["transformations"] if t["name"] == "with_merchant_risk")["how"] == "inner"
    assert next(c for c in d["quality_checks"] if c["name"] == "amount_positive")["severity"] == "warn"
    for path in ("sources.nope.table", "orchestration.nope", "transformations.nope.sql", "nope.x"):
        error = expect_error(
            create(tenant, pipelineName="p2", customizations={path: 1}),
            400,
            "validation_error",
            f"customizations.{path}",
        )
        assert path in error["message"]
    expect_error(
        create(tenant, pipelineName="p2", customizations={"orchestration.retries": -1}),
        400,
        "validation_error",
        "customizations.orchestration.retries",
    )


# ------------------------------------------------------------------------------------------ compliance


def _masks(definition: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in definition["transformations"] if t["type"] == "mask"]


def test_pci_and_sox_controls_are_added(tenant: Api) -> None:
    d = create(tenant).json()["definition"]
    (mask,) = _masks(d)
    assert mask["columns"] == {"card_number": "last4"}
    assert d["sinks"]["payment_events"]["input"] == mask["name"] == "with_merchant_risk_masked"
    checks = {c["name"]: c for c in d["quality_checks"]}
    assert checks["pcidss_masked_payment_events_card_number"]["expectation"] == "expect_column_values_to_match_regex"
    leak = checks["pci_no_pan_payment_events_card_number"]
    assert leak["expectation"] == "expect_column_values_to_not_match_regex" and leak["severity"] == "error"
    audit = d["sinks"]["sox_audit"]
    assert audit["table"] == "audit.payment_processing_runs" and audit["mode"] == "append"
    assert audit["depends_on"] == ["payment_events"]
    assert "{{ run_id }}" in next(t for t in d["transformations"] if t["name"] == audit["input"])["sql"]


def test_customizations_cannot_remove_compliance_controls(tenant: Api) -> None:
    resp = create(
        tenant,
        customizations={
            "sinks.payment_events.input": "fraud_features",  # try to bypass the mask
            "quality_checks": [],  # try to drop every check
        },
    )
    assert resp.status_code == 201, resp.text
    d = resp.json()["definition"]
    (mask,) = _masks(d)
    assert mask["input"] == "fraud_features" and d["sinks"]["payment_events"]["input"] == mask["name"]
    names = {c["name"] for c in d["quality_checks"]}
    assert {"pci_no_pan_payment_events_card_number", "pcidss_masked_payment_events_card_number"} <= names
    assert "sox_audit" in d["sinks"]
    # A control does not exist before the packs run, so it cannot be customized away either.
    for path in ("transformations.with_merchant_risk_masked.columns", "sinks.sox_audit.table"):
        expect_error(create(tenant, pipelineName="p3", customizations={path: {}}), 400, "validation_error")


def test_hipaa_and_gdpr_controls(tenant: Api) -> None:
    d = create(tenant, "healthcare/patient_encounters", pipelineName="enc").json()["definition"]
    (mask,) = _masks(d)
    assert mask["columns"] == {"ssn": "hash", "mrn": "hash", "full_name": "redact"}
    d = create(tenant, "ecommerce/customer_ltv", pipelineName="ltv", parameters={"RETENTION_DAYS": 30}).json()[
        "definition"
    ]
    assert d["sources"]["gdpr_erasure_requests"] == {
        "type": "postgres",
        "connection": "source-db",
        "table": "gdpr.erasure_requests",
    }
    gdpr = next(t for t in d["transformations"] if t["name"] == "ltv_gdpr")
    assert "make_interval(days => 30)" in gdpr["sql"] and "'customer_id'" in gdpr["sql"]
    (mask,) = _masks(d)
    assert mask["input"] == "ltv_gdpr" and mask["columns"] == {"email": "hash"}
    assert d["sinks"]["customer_ltv"]["input"] == "ltv_gdpr_masked"
    expect_error(
        create(tenant, "ecommerce/customer_ltv", pipelineName="ltv2", parameters={"RETENTION_DAYS": 0}),
        400,
        "validation_error",
        "parameters.RETENTION_DAYS",
    )


# ------------------------------------------------------------------------------------------ tenant templates


def test_tenant_templates_are_private(svc: Service, tenant: Api) -> None:
    resp = tenant.post("/v1/pipelines/templates", json=tenant_template())
    assert resp.status_code == 201, resp.text
    assert resp.json()["owner"] == "tenant" and resp.json()["versions"] == ["1.0.0"]
    assert "acme/stock" in {
        t["id"] for t in tenant.get("/v1/pipelines/templates", params={"size": 200}).json()["items"]
    }
    assert tenant.get("/v1/pipelines/templates/acme/stock").status_code == 200
    custom = tenant_template(id="custom/stock2")
    assert tenant.post("/v1/pipelines/templates", json=custom).status_code == 201

    globex = svc.api("globex")
    globex.create_connection("source-db")
    globex.create_connection("warehouse")
    ids = {t["id"] for t in globex.get("/v1/pipelines/templates", params={"size": 200}).json()["items"]}
    assert "acme/stock" not in ids and "custom/stock2" not in ids
    expect_error(globex.get("/v1/pipelines/templates/acme/stock"), 404, "not_found")
    expect_error(globex.get("/v1/pipelines/templates/custom/stock2"), 404, "not_found")
    expect_error(create(globex, "acme/stock"), 404, "not_found")
    # Another tenant's namespace, a shipped id, a duplicate version, an older version, a bad document.
    expect_error(globex.post("/v1/pipelines/templates", json=tenant_template()), 400, "validation_error", "id")
    expect_error(
        tenant.post("/v1/pipelines/templates", json=tenant_template(id="custom/x", definition={"sources": {}})),
        400,
        "validation_error",
    )
    expect_error(tenant.post("/v1/pipelines/templates", json=tenant_template()), 409, "conflict", "version")
    tenant.post("/v1/pipelines/templates", json=tenant_template("1.2.0"))
    expect_error(tenant.post("/v1/pipelines/templates", json=tenant_template("1.1.0")), 400, "validation_error")
    expect_error(tenant.post("/v1/pipelines/templates", json={"id": "acme/x"}), 400, "validation_error")
    undeclared = tenant_template(id="acme/y")
    undeclared["definition"]["sinks"]["inventory_snapshots"]["table"] = "${NOPE}"
    expect_error(tenant.post("/v1/pipelines/templates", json=undeclared), 400, "validation_error")


# ------------------------------------------------------------------------------------------ provenance


def test_a_new_tenant_template_version_puts_pipelines_behind_with_a_diff(tenant: Api) -> None:
    assert tenant.post("/v1/pipelines/templates", json=tenant_template("1.0.0")).status_code == 201
    pipeline = create(tenant, "acme/stock", pipelineName="stock", customizations={"orchestration.retries": 4}).json()
    pid = pipeline["pipelineId"]
    assert pipeline["template"] == {"id": "acme/stock", "version": "1.0.0", "latestVersion": "1.0.0", "behind": False}
    assert tenant.get(f"/v1/pipelines/{pid}/template-diff").json()["changes"] == []

    assert tenant.post("/v1/pipelines/templates", json=tenant_template("1.1.0", retries=9)).status_code == 201
    got = tenant.pipeline(pid)
    assert got["template"] == {"id": "acme/stock", "version": "1.0.0", "latestVersion": "1.1.0", "behind": True}
    diff = tenant.get(f"/v1/pipelines/{pid}/template-diff").json()
    assert (diff["version"], diff["latestVersion"], diff["behind"]) == ("1.0.0", "1.1.0", True)
    # The customization is re-applied to the new version: only the template's own change shows.
    assert diff["changes"] == [{"op": "replace", "path": "/orchestration/retry_delay_seconds", "old": 31, "value": 39}]
    assert tenant.get("/v1/pipelines/templates/acme/stock", params={"version": "1.0.0"}).json()["version"] == "1.0.0"
    plain = tenant.create_pipeline(
        {"name": "plain", "definition": create(tenant, pipelineName="x").json()["definition"]}
    )
    assert plain["template"] is None
    expect_error(tenant.get(f"/v1/pipelines/{plain['pipelineId']}/template-diff"), 404, "not_found")


@pytest.fixture
def bumped_catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the shipped catalogue, switched in through PIPELINE_TEMPLATES_DIR."""
    folder = tmp_path / "industries"
    shutil.copytree(catalog.templates_dir(), folder)
    monkeypatch.setenv(catalog.TEMPLATES_DIR_ENV, str(folder))
    yield folder
    catalog.reload()


def test_a_new_shipped_version_puts_pipelines_behind(tenant: Api, bumped_catalogue: Path) -> None:
    pid = create(tenant).json()["pipelineId"]
    path = bumped_catalogue / "fintech" / "payment_processing.json"
    doc = json.loads(path.read_text())
    new = copy.deepcopy(doc)
    new["version"] = "1.1.0"
    new["definition"]["quality_checks"][1]["kwargs"]["max_value"] = 50000
    path.write_text(json.dumps(new))
    catalog.reload()
    assert tenant.pipeline(pid)["template"]["behind"] is True
    diff = tenant.get(f"/v1/pipelines/{pid}/template-diff").json()
    changes = {c["path"]: c for c in diff["changes"]}
    assert changes.pop("/quality_checks/1/kwargs/max_value") == {
        "op": "replace",
        "path": "/quality_checks/1/kwargs/max_value",
        "old": 100000,
        "value": 50000,
    }
    # The SOX audit record names the template version it was rendered from.
    (audit,) = changes.values()
    assert "'1.0.0'" in audit["old"] and "'1.1.0'" in audit["value"]


def test_readme_lists_the_templates_as_generated_from_the_files() -> None:
    from service.templates import readme

    text = readme.README.read_text()
    assert readme.rendered(text) == text, "README.md is stale: run python -m service.templates.readme"
    for template_id in catalog.shipped():
        assert f"`{template_id}`" in text


def test_an_update_cannot_remove_the_compliance_controls(tenant: Api) -> None:
    pipeline = create(tenant).json()
    pid, definition = pipeline["pipelineId"], pipeline["definition"]
    body = {"name": "payments", "version": "1.0.1", "definition": definition}
    ok = copy.deepcopy(body)
    ok["definition"]["orchestration"]["retries"] = 5
    assert tenant.put(f"/v1/pipelines/{pid}", json=ok).status_code == 200
    unmasked = copy.deepcopy(body)
    unmasked["definition"]["sinks"]["payment_events"]["input"] = "with_merchant_risk"
    expect_error(
        tenant.put(f"/v1/pipelines/{pid}", json=unmasked),
        400,
        "validation_error",
        "definition.sinks.payment_events.input",
    )
    weakened = copy.deepcopy(body)
    for check in weakened["definition"]["quality_checks"]:
        if check["name"].startswith("pci_"):
            check["severity"] = "warn"
    expect_error(
        tenant.put(f"/v1/pipelines/{pid}", json=weakened), 400, "validation_error", "definition.quality_checks"
    )
    no_audit = copy.deepcopy(body)
    del no_audit["definition"]["sinks"]["sox_audit"]
    expect_error(
        tenant.put(f"/v1/pipelines/{pid}", json=no_audit), 400, "validation_error", "definition.sinks.sox_audit"
    )
    assert tenant.pipeline(pid)["definition"]["orchestration"]["retries"] == 5
