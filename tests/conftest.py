"""Fixtures shared by every test folder: throwaway PostgreSQL databases on the local server."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.pg import admin


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
