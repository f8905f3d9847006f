"""Resolving credentialSecretRef values through a pluggable backend, and encrypting inline credentials.

PIPELINE_SECRETS_BACKEND selects where a ref `<ref>` resolves (each holds JSON {"username", "password"}):
- `env` (default): the environment variable PIPELINE_SECRET_<REF> (upper-cased, other characters → `_`);
- `file`: an entry in a Fernet-encrypted file in the data dir (key: the service's encryption key), written
  by `pipeline-service secret put <ref>`;
- `aws`: the AWS Secrets Manager secret named PIPELINE_SECRETS_AWS_PREFIX + <ref> (boto3's usual
  credential chain; PIPELINE_SECRETS_AWS_REGION / PIPELINE_SECRETS_AWS_ENDPOINT_URL select the endpoint).
A secret's value is never echoed: errors name the ref and where it was looked up, nothing else.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path
from typing import Any, Protocol

from cryptography.fernet import Fernet, InvalidToken

from connections import Credentials
from service.errors import ServiceError, ValidationFailed

REF_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
BACKENDS = ("env", "file", "aws")


class SecretsUnavailable(ServiceError):
    """The secrets backend itself failed (not the caller's input)."""

    status_code = 502
    code = "secrets_backend_error"


class SecretNotFound(ValidationFailed):
    pass


def env_var_for(ref: str) -> str:
    return "PIPELINE_SECRET_" + re.sub(r"[^A-Z0-9]", "_", ref.upper())


def parse_credentials(raw: str) -> Credentials:
    """{"username", "password"} JSON → Credentials; ValueError (without the value) otherwise."""
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get("username"), str):
            raise ValueError
        password = data.get("password")
        if password is not None and not isinstance(password, str):
            raise ValueError
    except (ValueError, TypeError):
        raise ValueError('must hold JSON {"username": ..., "password": ...}') from None
    return Credentials(username=data["username"], password=password)


class SecretsBackend(Protocol):
    name: str

    def get(self, ref: str) -> str | None:
        """The raw JSON stored under `ref`, or None when there is none."""

    def where(self, ref: str) -> str:
        """Where `ref` is looked up, for messages ("the environment variable PIPELINE_SECRET_X")."""


class EnvSecrets:
    name = "env"

    def get(self, ref: str) -> str | None:
        return os.environ.get(env_var_for(ref))

    def where(self, ref: str) -> str:
        return f"the environment variable {env_var_for(ref)}"


class FileSecrets:
    """All secrets in one Fernet token (a JSON object by ref), replaced atomically under a lock."""

    name = "file"

    def __init__(self, path: Path, key: str):
        self.path = Path(path)
        self._fernet = Fernet(key.encode())

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            return dict(json.loads(self._fernet.decrypt(self.path.read_bytes())))
        except InvalidToken:
            raise SecretsUnavailable(
                f"the secrets file {self.path} cannot be decrypted: was PIPELINE_ENCRYPTION_KEY changed?"
            ) from None

    def get(self, ref: str) -> str | None:
        value = self._read().get(ref)
        return None if value is None else json.dumps(value)

    def put(self, ref: str, creds: Credentials) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            data[ref] = {"username": creds.username, "password": creds.password}
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(self._fernet.encrypt(json.dumps(data).encode()))
            os.replace(tmp, self.path)

    def where(self, ref: str) -> str:
        return f"the secret '{ref}' in {self.path} (pipeline-service secret put {ref})"


class AwsSecrets:
    name = "aws"

    def __init__(self, region: str | None, endpoint_url: str | None, prefix: str = ""):
        self.region, self.endpoint_url, self.prefix = region, endpoint_url, prefix

    def _client(self) -> Any:
        import boto3

        return boto3.session.Session().client(
            "secretsmanager", region_name=self.region, endpoint_url=self.endpoint_url or None
        )

    def get(self, ref: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            value = self._client().get_secret_value(SecretId=self.prefix + ref)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ResourceNotFoundException":
                return None
            raise SecretsUnavailable(f"AWS Secrets Manager refused to read {self.where(ref)}: {code}") from None
        except BotoCoreError as exc:
            raise SecretsUnavailable(f"AWS Secrets Manager is unreachable: {type(exc).__name__}") from None
        return value.get("SecretString")

    def put(self, ref: str, creds: Credentials) -> None:
        from botocore.exceptions import ClientError

        payload = json.dumps({"username": creds.username, "password": creds.password})
        client = self._client()
        try:
            client.put_secret_value(SecretId=self.prefix + ref, SecretString=payload)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            client.create_secret(Name=self.prefix + ref, SecretString=payload)

    def where(self, ref: str) -> str:
        return f"the AWS Secrets Manager secret '{self.prefix}{ref}'"


def make_backend(settings: Any) -> SecretsBackend:
    """The backend PIPELINE_SECRETS_BACKEND names (settings: service.config.Settings)."""
    kind = settings.secrets_backend
    if kind == "file":
        return FileSecrets(settings.resolved_secrets_file(), settings.resolved_encryption_key())
    if kind == "aws":
        return AwsSecrets(settings.secrets_aws_region, settings.secrets_aws_endpoint_url, settings.secrets_aws_prefix)
    return EnvSecrets()


def resolve(backend: SecretsBackend, ref: str) -> Credentials:
    """The credentials `ref` names; a missing or malformed secret is a 400 naming credentialSecretRef."""
    raw = backend.get(ref)
    if raw is None:
        message = f"secret '{ref}' not found: set {backend.where(ref)}"
        raise SecretNotFound(message, details=[{"path": "credentialSecretRef", "message": message}])
    try:
        return parse_credentials(raw)
    except ValueError as exc:
        message = f"{backend.where(ref)} {exc}"
        raise ValidationFailed(message, details=[{"path": "credentialSecretRef", "message": message}]) from None


def resolve_secret_ref(ref: str) -> Credentials:
    """Environment-backend resolution (kept for callers outside a running app)."""
    return resolve(EnvSecrets(), ref)


class Vault:
    """Fernet encryption for credentials the service stores itself."""

    def __init__(self, key: str):
        self._fernet = Fernet(key.encode())

    def seal(self, creds: Credentials) -> str:
        payload = json.dumps({"username": creds.username, "password": creds.password})
        return self._fernet.encrypt(payload.encode()).decode()

    def open(self, token: str) -> Credentials:
        try:
            data = json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken:
            raise RuntimeError("stored credentials cannot be decrypted: was PIPELINE_ENCRYPTION_KEY changed?") from None
        return Credentials(username=data["username"], password=data.get("password"))
