"""Servers the connection tests talk to; each is started once per session and always stopped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.connections.servers import HttpApi, MotoServer, ScramCluster

SCRAM_PASSWORD = "scram-Qv7-right-password"


@pytest.fixture(scope="session")
def scram_cluster() -> Iterator[ScramCluster]:
    cluster = ScramCluster.start(SCRAM_PASSWORD)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = MotoServer.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def http_api() -> Iterator[HttpApi]:
    api = HttpApi()
    yield api
    api.stop()
