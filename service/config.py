"""One settings class; every variable has the PIPELINE_ prefix except the Airflow port (AIRFLOW_PORT)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


def _persisted_secret(path: Path, make: Callable[[], str]) -> str:
    """Read a generated secret from the data dir, creating it (mode 600) on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value


class RateCard(BaseModel):
    """What a run costs (PIPELINE_COST_RATE_CARD, JSON; service/cost). Every rate is >= 0 and finite; a GB is
    10^9 bytes. Compute is per second of task run time; a task's pool rate wins over its queue rate, which wins
    over the default. Storage is per GB a task wrote (its outputs' size); network is per GB a task wrote to a
    host other than one it read from (OpenLineage namespaces `scheme://host:port`)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", allow_inf_nan=False, frozen=True
    )

    # About a managed Airflow worker's vCPU ($0.36 an hour), S3 standard storage, and cross-zone transfer.
    compute_usd_per_task_second: float = Field(default=0.0001, ge=0)
    compute_usd_per_task_second_by_pool: dict[str, NonNegativeFloat] = Field(default_factory=dict)
    compute_usd_per_task_second_by_queue: dict[str, NonNegativeFloat] = Field(default_factory=dict)
    storage_usd_per_gb: float = Field(default=0.023, ge=0)
    network_usd_per_gb: float = Field(default=0.01, ge=0)

    def compute_rate(self, pool: str | None, queue: str | None) -> float:
        if pool is not None and pool in self.compute_usd_per_task_second_by_pool:
            return self.compute_usd_per_task_second_by_pool[pool]
        if queue is not None and queue in self.compute_usd_per_task_second_by_queue:
            return self.compute_usd_per_task_second_by_queue[queue]
        return self.compute_usd_per_task_second


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PIPELINE_", extra="ignore")

    data_dir: Path = Path(".data")
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    jwt_secret: str | None = None
    # When set, a token must carry this `aud`; unset, `aud` is not checked (README, API).
    jwt_audience: str | None = None
    encryption_key: str | None = None
    dags_dir: Path = REPO_ROOT / "dags"
    # The distributed profile publishes the DAG files to an S3 DAG bundle instead of dags_dir: the bucket and
    # prefix Airflow's S3DagBundle reads (README, Profiles). Credentials: these, else AWS's usual chain.
    dag_bundle_s3_bucket: str | None = None
    dag_bundle_s3_prefix: str = "dags"
    dag_bundle_s3_endpoint_url: str | None = None
    dag_bundle_s3_region: str | None = None
    dag_bundle_s3_access_key_id: str | None = None
    dag_bundle_s3_secret_access_key: str | None = None
    airflow_url: str | None = None
    airflow_username: str = "admin"
    airflow_password: str | None = None
    # How long publishing waits for Airflow to serve a new DAG before it reports a timeout.
    publish_timeout_seconds: float = 90.0
    # Background loops: dispatch of queued executions, deployment of pending pipelines.
    background_interval_seconds: float = 2.0
    background_tasks: bool = True
    # Executions one tenant may start per rolling minute (counted in the database: holds across replicas).
    execute_rate_per_minute: int = Field(default=60, ge=1)
    # A status read younger than this is served from the database; older, it is refreshed from Airflow.
    status_max_age_seconds: float = 0.25
    # How long one process answers repeated polls of a finished execution from memory (0: never).
    status_cache_seconds: float = 1.0
    airflow_port: int = Field(default=8080, validation_alias="AIRFLOW_PORT")
    # Where credentialSecretRef values resolve: env | file | aws (see service/secrets.py).
    secrets_backend: Literal["env", "file", "aws"] = "env"
    secrets_file: Path | None = None  # file backend; default <data dir>/secrets.fernet
    secrets_aws_region: str | None = None
    secrets_aws_endpoint_url: str | None = None
    secrets_aws_prefix: str = ""
    # Hard limit of POST /v1/pipelines/connections/{id}/test.
    connection_test_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # The network policy (connections/network.py): private or loopback CIDRs tenants may reach (default
    # none), and host:port endpoints they never may (the service's own and Airflow's are added to them).
    allowed_networks: str = ""
    denied_endpoints: str = ""
    # The rate card of cost tracking, JSON with RateCard's camelCase keys (defaults where a key is missing).
    cost_rate_card: RateCard = Field(default_factory=RateCard)
    # The key Airflow's OpenLineage transport presents to POST /api/v1/lineage (as `Bearer <key>`); unset, one
    # is generated into the data dir, where `up` and the test harness read it for Airflow's configuration.
    openlineage_api_key: str | None = None
    # An OpenLineage backend (e.g. Marquez) that gets every accepted event too: <url>/api/v1/lineage.
    openlineage_forward_url: str | None = None
    openlineage_forward_api_key: str | None = None
    # Alert webhooks (service/monitoring/delivery.py): the timeout of one delivery, and the attempts after which
    # a delivery that keeps failing (waits 1, 2, 4 ... s between them, at most 300 s) is abandoned.
    alert_delivery_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    alert_delivery_max_attempts: int = Field(default=10, ge=1, le=50)
    # How often the SLA and budget alert conditions are checked.
    alert_check_interval_seconds: float = Field(default=10.0, gt=0)
    # How often the reconciler asks Airflow about unfinished runs (a tick without any costs one SELECT): the
    # delay between Airflow finishing a run and the service (its alerts) seeing it.
    reconcile_interval_seconds: float = Field(default=1.0, gt=0)

    def model_post_init(self, __context: object) -> None:
        self.data_dir = self.data_dir.resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'service.db'}"
        if not self.airflow_url:
            self.airflow_url = f"http://127.0.0.1:{self.airflow_port}"
        self.airflow_url = self.airflow_url.rstrip("/")

    @property
    def sqlalchemy_url(self) -> str:
        url = self.database_url or ""
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @property
    def airflow_home(self) -> Path:
        return self.data_dir / "airflow"

    def resolved_secrets_file(self) -> Path:
        return self.secrets_file or self.data_dir / "secrets.fernet"

    def resolved_jwt_secret(self) -> str:
        return self.jwt_secret or _persisted_secret(self.data_dir / "jwt_secret", lambda: secrets.token_urlsafe(48))

    def resolved_openlineage_api_key(self) -> str:
        return self.openlineage_api_key or _persisted_secret(
            self.data_dir / "openlineage_api_key", lambda: secrets.token_urlsafe(32)
        )

    def resolved_encryption_key(self) -> str:
        from cryptography.fernet import Fernet

        return self.encryption_key or _persisted_secret(
            self.data_dir / "encryption_key", lambda: Fernet.generate_key().decode()
        )

    def resolved_airflow_password(self) -> str | None:
        if self.airflow_password:
            return self.airflow_password
        path = self.airflow_home / "simple_auth_manager_passwords.json.generated"
        if path.exists():
            import json

            passwords: dict[str, str] = json.loads(path.read_text())  # Airflow's simple auth manager: user -> password
            return passwords.get(self.airflow_username)
        return None


@lru_cache
def get_settings() -> Settings:
    return Settings()
