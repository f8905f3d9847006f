"""Finding 6: input a client controls never makes a 500. A page number past any integer the database holds, and
control characters in the ids of the Airflow passthrough (which made httpx refuse to build the URL), are the
client's mistakes: 400 in the project's error shape, naming the parameter.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from service.airflow.client import AirflowClient
from service.errors import ValidationFailed
from tests.security.service_app import running_service
from tests.service.helpers import Api, expect_error

LISTS = [
    "/v1/pipelines",
    "/v1/pipelines/connections",
    "/v1/pipelines/executions",
    "/v1/pipelines/schedules",
    "/v1/pipelines/templates",
    "/v1/airflow/dags",
]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One app for the module (the requests change nothing); SQLite, whose INTEGER overflowed first."""
    with running_service(tmp_path_factory.mktemp("client-errors")) as svc:
        yield svc.api("acme")


@pytest.mark.parametrize("url", LISTS)
@pytest.mark.parametrize("page", ["99999999999999999999", "1000001", "-1"])
def test_a_page_out_of_range_is_400_naming_page(api: Api, url: str, page: str) -> None:
    expect_error(api.get(url, params={"page": page}), 400, "validation_error", "page")


@pytest.mark.parametrize("url", LISTS)
def test_the_last_allowed_page_is_an_empty_page(api: Api, url: str) -> None:
    resp = api.get(url, params={"page": 1_000_000, "size": 200})
    assert resp.status_code == 200, resp.text
    assert resp.json()["items"] == []


@pytest.mark.parametrize(
    "url",
    [
        "/v1/airflow/dags/acme.x%00/runs",
        "/v1/airflow/dags/acme.x/runs/a%00b/tasks",
        "/v1/airflow/dags/acme.x/runs/a%0Ab/tasks/t/logs",
        "/v1/airflow/dags/acme.x/runs/r/tasks/t%7F/logs",
        "/v1/airflow/dags/acme.x%20y/pause",
    ],
)
def test_control_characters_in_airflow_ids_are_400(api: Api, url: str) -> None:
    method = "POST" if url.endswith("pause") else "GET"
    expect_error(api.request(method, url), 400, "validation_error")


def test_the_client_never_lets_an_id_reshape_the_url() -> None:
    """Ids are single percent-encoded path segments; a URL httpx cannot build is a 400, never a 500."""
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        return httpx.Response(200, json={"dag_runs": [], "total_entries": 0})

    client = AirflowClient("http://airflow.test", "admin", lambda: "x", transport=httpx.MockTransport(handle))
    client.list_runs("acme.x/../../connections?y=1")
    assert (
        seen[-1] == "/api/v2/dags/acme.x%2F..%2F..%2Fconnections%3Fy%3D1/dagRuns?limit=25&offset=0&order_by=-run_after"
    )
    with pytest.raises(ValidationFailed):
        client.request("GET", "/dags/x\x00")


@pytest.mark.parametrize(
    ("name", "value"), [("from", "0001-01-01T00:00:00+01:00"), ("to", "9999-12-31T23:59:59-01:00")]
)
def test_a_time_outside_the_representable_range_is_400_naming_it(api: Api, name: str, value: str) -> None:
    """Found by the fuzzer: a valid ISO time whose UTC instant is before year 1 or after 9999 overflowed."""
    expect_error(api.get("/v1/pipelines/executions", params={name: value}), 400, "validation_error", name)
