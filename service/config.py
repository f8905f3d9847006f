"""One settings class; every variable has the PIPELINE_ prefix except the Airflow port (AIRFLOW_PORT)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
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
