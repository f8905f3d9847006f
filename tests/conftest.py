"""Fixtures shared by every test folder: throwaway PostgreSQL databases on the local server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.pg import admin

# The suite's servers (PostgreSQL, moto, small HTTP APIs) listen on loopback, which the network policy
# (connections.network) refuses unless allowed: allowed here as `make up` and the e2e harness allow it.
os.environ.setdefault("PIPELINE_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")


@pytest.fixture(scope="session")
def make_database() -> Iterator[Callable[[str], str]]:
    """Creates uniquely named databases; returns their names; drops them all at the end."""
    created: list[str] = []

    def make(prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        admin(f'CREATE DATABASE "{name}"')
        created.append(name)
        return name

    yield make
    for name in created:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# The end-to-end session fixtures live in one module, so tests/e2e and tests/security share one stack.
pytest_plugins = ["tests.e2e.fixtures"]
