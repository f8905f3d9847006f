"""Annotated dependency aliases for the objects the app holds in `app.state`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.airflow.client import AirflowClient
from service.secrets import Vault


def _airflow(request: Request) -> AirflowClient:
    return request.app.state.airflow  # type: ignore[no-any-return]


def _vault(request: Request) -> Vault:
    return request.app.state.vault  # type: ignore[no-any-return]


Airflow = Annotated[AirflowClient, Depends(_airflow)]
VaultDep = Annotated[Vault, Depends(_vault)]
