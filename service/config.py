"""One settings class; every variable has the PIPELINE_ prefix except the Airflow port (AIRFLOW_PORT)."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


def _persisted_secret(path: Path, make) -> str:  # type: ignore[no-untyped-def]
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
    airflow_port: int = Field(default=8080, validation_alias="AIRFLOW_PORT")

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

            return json.loads(path.read_text()).get(self.airflow_username)
        return None


@lru_cache
def get_settings() -> Settings:
    return Settings()
