"""Finding 8 (ReDoS): a tenant template's parameter `pattern` is matched by RE2 in linear time; a pattern RE2
cannot compile is refused with a 400 naming the parameter's pattern (service/templates/catalog.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from service.templates import catalog
from tests.service.helpers import Api, Service, expect_error

EVIL = r"^(a+)+$"  # exponential backtracking in Python's re on "aaa…ab"
# (the last case: longer than catalog.MAX_PATTERN_LENGTH, 500)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: pattern matching does not depend on the store."""
    return f"sqlite:///{tmp_path}/svc.db"


def _template(pattern: str) -> dict[str, Any]:
    """A tenant template with a string parameter CODE constrained by `pattern`."""
    doc = json.loads((catalog.templates_dir() / "retail" / "inventory_snapshot.json").read_text())
    doc.update({"id": "acme/stock", "name": "Acme stock", "version": "1.0.0"})
    doc["parameters"]["CODE"] = {"type": "string", "description": "a code", "pattern": pattern}
    return doc


@pytest.fixture
def api(svc: Service) -> Api:
    api = svc.api("acme")
    api.create_connection("source-db")
    api.create_connection("warehouse")
    return api


def test_catastrophic_pattern_is_matched_in_linear_time(api: Api) -> None:
    """With a backtracking engine the 400 below takes ~6 s of one worker's CPU (2^27 steps); RE2: milliseconds."""
    assert api.post("/v1/pipelines/templates", json=_template(EVIL)).status_code == 201
    body = {"pipelineName": "stock", "parameters": {"CODE": "a" * 27 + "b"}}
    started = time.perf_counter()
    resp = api.post("/v1/pipelines/templates/acme/stock/create", json=body)
    elapsed = time.perf_counter() - started
    expect_error(resp, 400, "validation_error", "parameters.CODE")
    assert elapsed < 1.0, f"one request took {elapsed:.1f} s"
    ok = {"pipelineName": "stock", "parameters": {"CODE": "a" * 10_000}}
    assert api.post("/v1/pipelines/templates/acme/stock/create", json=ok).status_code == 201


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?=a)a", r"(?<!b)a", "x" * 501])
def test_patterns_re2_cannot_run_are_400(api: Api, pattern: str) -> None:
    """Backreferences and lookaround need backtracking; an overlong pattern is refused before compiling."""
    resp = api.post("/v1/pipelines/templates", json=_template(pattern))
    error = expect_error(resp, 400, "validation_error", "parameters.CODE.pattern")
    assert "pattern" in error["message"], error
