"""The request sessions (service/db.py): many concurrent requests of sync routes never exhaust the pool."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from tests.service.helpers import Api

CONCURRENT = 80  # twice the thread pool's 40 threads, more than the 40 connections


def test_concurrent_requests_never_deadlock_on_the_pool(api: Api) -> None:
    """A sync route's request keeps its connection while it waits for a thread to validate its response. With
    more requests than connections, every thread used to wait for a connection held by a request waiting for
    a thread, until the pool's 30 s timeout made them all 500s (found by bench/load.py)."""
    api.create_connection("warehouse")
    start = threading.Barrier(CONCURRENT)

    def one(_: int) -> int:
        start.wait()
        return api.get("/v1/pipelines/connections").status_code

    began = time.monotonic()
    with ThreadPoolExecutor(CONCURRENT) as pool:
        statuses = Counter(pool.map(one, range(CONCURRENT)))
    assert statuses == Counter({200: CONCURRENT}), statuses
    assert time.monotonic() - began < 20, "requests waited for the pool's timeout"
