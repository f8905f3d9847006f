"""Times the walking skeleton's two waits, on a real Airflow started like `make up` starts it:
  - POST /v1/pipelines -> status ACTIVE (DAG file written, parsed by Airflow, unpaused)
  - POST .../execute   -> status COMPLETED (the example ETL: 8 Airflow tasks, 2 databases)

Usage: .venv/bin/python bench/publish_and_execute.py [rounds]   (needs the local PostgreSQL)
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e import harness  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(rounds: int) -> None:
    t0 = time.monotonic()
    with harness.example_stack() as (_, api):
        print(f"stack up (Airflow migrate + 4 components + service): {time.monotonic() - t0:.1f} s")
        to_active, to_completed = [], []
        example = json.loads((REPO / "examples" / "daily-sales-etl.json").read_text())
        for i in range(rounds):
            example["name"] = f"bench-{i}"
            t = time.monotonic()
            pid = api.post("/v1/pipelines", json=example).json()["pipelineId"]
            p = harness.wait_for(
                lambda pid=pid: api.get(f"/v1/pipelines/{pid}").json(),
                lambda p: p["status"] in ("ACTIVE", "INVALID"),
                120,
                0.05,
            )
            to_active.append(time.monotonic() - t)
            assert p["status"] == "ACTIVE", p
            t = time.monotonic()
            eid = api.post(f"/v1/pipelines/{pid}/execute", json={}).json()["executionId"]
            e = harness.wait_for(
                lambda eid=eid: api.get(f"/v1/pipelines/executions/{eid}").json(),
                lambda e: e["status"] in ("COMPLETED", "FAILED", "CANCELLED"),
                300,
                0.1,
            )
            to_completed.append(time.monotonic() - t)
            assert e["status"] == "COMPLETED", e
            print(f"round {i + 1}: create->ACTIVE {to_active[-1]:.2f} s, execute->COMPLETED {to_completed[-1]:.2f} s")
        for label, xs in (("create->ACTIVE", to_active), ("execute->COMPLETED", to_completed)):
            print(
                f"{label}: median {statistics.median(xs):.2f} s, min {min(xs):.2f} s, max {max(xs):.2f} s "
                f"over {len(xs)} rounds"
            )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
