"""Publishing outcomes: what the publisher makes of Airflow's answers (import errors, no Airflow at all)."""

from __future__ import annotations

from typing import Any

from tests.service.fake_airflow import read_config
from tests.service.helpers import Api, Service, example, expect_error

TRACEBACK = 'Traceback (most recent call last):\n  File "pipeline_acme__daily-sales-etl.py"\nZeroDivisionError: boom'


def test_import_error_makes_it_invalid_with_the_error_text(svc: Service, acme: Api) -> None:
    pipeline = acme.create_pipeline(example())
    svc.fake.broken[svc.dag_file(pipeline["dagId"]).name] = TRACEBACK
    svc.publish()

    published = acme.pipeline(pipeline["pipelineId"])
    assert published["status"] == "INVALID"
    assert "ZeroDivisionError: boom" in published["statusDetail"]
    assert pipeline["dagId"] not in svc.fake.dags
    assert acme.get("/v1/pipelines", params={"status": "INVALID"}).json()["total"] == 1


def test_an_invalid_pipeline_cannot_run_until_fixed(svc: Service, acme: Api) -> None:
    pipeline = acme.create_pipeline(example())
    svc.fake.broken[svc.dag_file(pipeline["dagId"]).name] = TRACEBACK
    svc.publish()
    url = f"/v1/pipelines/{pipeline['pipelineId']}"
    assert "INVALID" in expect_error(acme.post(f"{url}/execute", json={}), 409, "conflict")["message"]

    svc.fake.broken.clear()
    assert acme.put(url, json=example(version="1.0.1")).status_code == 200
    svc.publish()
    assert acme.pipeline(pipeline["pipelineId"])["status"] == "ACTIVE"
    assert acme.execute(pipeline["pipelineId"])["status"] == "QUEUED"


def test_airflow_unreachable_keeps_it_created_until_airflow_answers(svc: Service, acme: Api) -> None:
    pipeline_id = acme.create_pipeline(example())["pipelineId"]
    svc.fake.down = True
    svc.publish()

    waiting = acme.pipeline(pipeline_id)
    assert waiting["status"] == "CREATED"
    assert "waiting for Airflow" in waiting["statusDetail"]
    assert "unreachable" in waiting["statusDetail"]

    svc.fake.down = False
    assert svc.publish() == 1
    assert acme.pipeline(pipeline_id)["status"] == "ACTIVE"


def test_an_update_is_published_over_the_active_dag(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    changed = example(version="1.1.0")
    changed["definition"]["sources"]["raw_transactions"]["table"] = "public.raw_transactions_v2"
    acme.put(f"/v1/pipelines/{active['pipelineId']}", json=changed)
    svc.publish()

    pipeline = acme.pipeline(active["pipelineId"])
    assert (pipeline["status"], pipeline["revision"]) == ("ACTIVE", 2)
    config = read_config(svc.dag_file(active["dagId"]))
    assert config["definition"]["sources"]["raw_transactions"]["table"] == "public.raw_transactions_v2"


def test_two_tenants_never_share_a_dag_file(svc: Service) -> None:
    a, ab = svc.api("a"), svc.api("a__b")
    created = []
    for api, name in ((a, "b__x"), (ab, "x")):
        api.create_connection("sales-database")
        api.create_connection("warehouse")
        created.append(api.create_pipeline(example(name)))
        svc.publish()

    # Tenant a's DAG file must still define tenant a's DAG, and survive tenant a__b deleting its pipeline.
    assert read_config(svc.dag_file("a.b__x"))["dag_id"] == "a.b__x"
    assert ab.delete(f"/v1/pipelines/{created[1]['pipelineId']}").status_code == 204
    assert svc.dag_file("a.b__x").exists()


def test_active_only_once_airflow_serves_the_file_just_written(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    """A parse that began before the write ends after it: Airflow's parse time is new, its DAG is the old
    one. The publisher tells by the mark in the DAG's docs and asks for another parse."""
    dag_id = active["dagId"]
    before = svc.fake.dags[dag_id]["doc_md"]
    assert "published:" in before and "revision 1" in before
    svc.fake.stale_parse.add(dag_id)
    parses = len(svc.fake.calls("PUT", r"/api/v2/parseDagFile/.*"))
    changed = example(version="1.1.0")
    changed["definition"]["sources"]["raw_transactions"]["table"] = "public.raw_transactions_v2"
    acme.put(f"/v1/pipelines/{active['pipelineId']}", json=changed)
    svc.publish()

    assert acme.pipeline(active["pipelineId"])["status"] == "ACTIVE"
    assert len(svc.fake.calls("PUT", r"/api/v2/parseDagFile/.*")) >= parses + 2  # the stale parse, and one more
    served = svc.fake.parsed_files[dag_id]
    assert served["definition"]["sources"]["raw_transactions"]["table"] == "public.raw_transactions_v2"
    assert "revision 2" in svc.fake.dags[dag_id]["doc_md"] and svc.fake.dags[dag_id]["doc_md"] != before


def test_a_change_the_bundle_missed_is_written_again(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    """An S3 DAG bundle re-downloads an object only if its size or whole-second LastModified says it changed:
    a rewrite can go unseen. Parses keep serving the previous file; the publisher writes the file again."""
    dag_id = active["dagId"]
    svc.fake.missed_write.add(dag_id)
    changed = example(version="1.1.0")
    changed["description"] = "rewritten"
    acme.put(f"/v1/pipelines/{active['pipelineId']}", json=changed)
    svc.publish()

    assert acme.pipeline(active["pipelineId"])["status"] == "ACTIVE"
    assert dag_id not in svc.fake.missed_write  # the second write was seen
    assert "revision 2" in svc.fake.dags[dag_id]["doc_md"]


def test_the_dag_docs_say_where_the_pipeline_comes_from(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    config = read_config(svc.dag_file(active["dagId"]))
    assert config["doc"].startswith(active["description"])
    assert f"`{active['pipelineId']}`" in config["doc"] and "revision 1" in config["doc"]
