"""Resolving credentialSecretRef values through a pluggable backend, and encrypting inline credentials.

A ref is scoped by the tenant whose connection names it: the same ref of two tenants names two secrets, and
no tenant can name another's (a connection test would otherwise send tenant A's password to a host tenant B
chose). PIPELINE_SECRETS_BACKEND selects where tenant T's ref R resolves (each holds JSON
{"username", "password"}):
- `env` (default): the environment variable PIPELINE_SECRET_<T>__<R>, each part upper-cased with '-' as '_'.
  That is one to one only for names of lower-case letters and digits joined by single '-': then neither
  encoded part holds '__' or starts or ends with '_', so the first '__' splits the two, and each part reads
  back exactly (upper → lower, '_' → '-'). Any other tenant id or ref ('Sales', 'db_creds', 'a.b', 'a--b',
  'db-') is refused (400 naming credentialSecretRef) rather than risk two pairs sharing a variable;
- `file`: an entry under (T, R) in a Fernet-encrypted file in the data dir (key: the service's encryption
  key), written by `pipeline-service secret put --tenant T R`;
- `aws`: the AWS Secrets Manager secret named PIPELINE_SECRETS_AWS_PREFIX + T + '/' + R (tenant ids and refs
  hold no '/'; boto3's usual credential chain; PIPELINE_SECRETS_AWS_REGION / _ENDPOINT_URL select the endpoint).
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
from service.auth import TENANT_PATTERN
from service.errors import ServiceError, ValidationFailed

REF_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
BACKENDS = ("env", "file", "aws")
ENV_PREFIX = "PIPELINE_SECRET_"
# A tenant id or ref the env backend can hold: upper-casing it and writing '-' as '_' is then one to one.
ENV_NAME_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
FILE_FORMAT = 2  # {"format": 2, "tenants": {tenant: {ref: creds}}, "unscoped": {ref: creds}}


class SecretsUnavailable(ServiceError):
    """The secrets backend itself failed (not the caller's input)."""

    status_code = 502
    code = "secrets_backend_error"


class SecretNotFound(ValidationFailed):
    pass


def _ref_error(message: str) -> ValidationFailed:
    return ValidationFailed(message, details=[{"path": "credentialSecretRef", "message": message}])


def check_names(tenant: str, ref: str) -> None:
    """Every backend's guard: a malformed tenant or ref could otherwise reach into another tenant's scope
    (a '/' in the aws name, a '__' in the env name)."""
    if not TENANT_PATTERN.fullmatch(tenant):
        raise _ref_error(f"tenant '{tenant}' is not a valid tenant id")
    if not REF_PATTERN.fullmatch(ref):
        raise _ref_error(f"'{ref}' is not a valid secret ref (letters, digits, '_', '.', '-')")


def env_var_for(tenant: str, ref: str) -> str:
    """PIPELINE_SECRET_<TENANT>__<REF>; a tenant or ref that would not map one to one is a 400."""
    check_names(tenant, ref)
    for what, value in (("tenant id", tenant), ("credentialSecretRef", ref)):
        if not ENV_NAME_PATTERN.fullmatch(value):
            raise _ref_error(
                f"the env secrets backend cannot hold the {what} '{value}': variable names are upper-cased with "
                "'-' as '_', so only lower-case letters, digits and single inner '-' name one variable "
                "unambiguously; rename the ref, or use PIPELINE_SECRETS_BACKEND=file or aws"
            )
    return f"{ENV_PREFIX}{tenant.upper().replace('-', '_')}__{ref.upper().replace('-', '_')}"


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

    def get(self, tenant: str, ref: str) -> str | None:
        """The raw JSON stored under `ref` for `tenant`, or None when there is none."""

    def where(self, tenant: str, ref: str) -> str:
        """Where `ref` is looked up for `tenant`, for messages ("the environment variable PIPELINE_SECRET_X__Y")."""


class EnvSecrets:
    name = "env"

    def get(self, tenant: str, ref: str) -> str | None:
        return os.environ.get(env_var_for(tenant, ref))

    def where(self, tenant: str, ref: str) -> str:
        try:
            return f"the environment variable {env_var_for(tenant, ref)}"
        except ValidationFailed:  # a label must not fail: get() says why the name is refused
            return "the env secrets backend (which cannot hold this name)"


class FileSecrets:
    """All secrets in one Fernet token (a JSON object by tenant, then by ref), replaced atomically under a lock.

    A file written before refs were scoped (one object by ref) is read with its entries under "unscoped":
    kept, never resolved, until each is stored again for its tenant."""

    name = "file"

    def __init__(self, path: Path, key: str):
        self.path = Path(path)
        self._fernet = Fernet(key.encode())

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"format": FILE_FORMAT, "tenants": {}}
        try:
            data = dict(json.loads(self._fernet.decrypt(self.path.read_bytes())))
        except InvalidToken:
            raise SecretsUnavailable(
                f"the secrets file {self.path} cannot be decrypted: was PIPELINE_ENCRYPTION_KEY changed?"
            ) from None
        if data.get("format") != FILE_FORMAT:
            return {"format": FILE_FORMAT, "tenants": {}, "unscoped": data}
        return data

    def get(self, tenant: str, ref: str) -> str | None:
        check_names(tenant, ref)
        value = self._read()["tenants"].get(tenant, {}).get(ref)
        return None if value is None else json.dumps(value)

    def put(self, tenant: str, ref: str, creds: Credentials) -> None:
        check_names(tenant, ref)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            data["tenants"].setdefault(tenant, {})[ref] = {"username": creds.username, "password": creds.password}
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(self._fernet.encrypt(json.dumps(data).encode()))
            os.replace(tmp, self.path)

    def where(self, tenant: str, ref: str) -> str:
        return (
            f"the secret '{ref}' of tenant '{tenant}' in {self.path} "
            f"(pipeline-service secret put --tenant {tenant} {ref})"
        )


class AwsSecrets:
    name = "aws"

    def __init__(self, region: str | None, endpoint_url: str | None, prefix: str = ""):
        self.region, self.endpoint_url, self.prefix = region, endpoint_url, prefix

    def secret_name(self, tenant: str, ref: str) -> str:
        """<prefix><tenant>/<ref>: neither holds a '/', so the name splits back into exactly one pair."""
        check_names(tenant, ref)
        return f"{self.prefix}{tenant}/{ref}"

    def _client(self) -> Any:
        import boto3

        return boto3.session.Session().client(
            "secretsmanager", region_name=self.region, endpoint_url=self.endpoint_url or None
        )

    def get(self, tenant: str, ref: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        name = self.secret_name(tenant, ref)
        try:
            value = self._client().get_secret_value(SecretId=name)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ResourceNotFoundException":
                return None
            raise SecretsUnavailable(f"AWS Secrets Manager refused to read {self.where(tenant, ref)}: {code}") from None
        except BotoCoreError as exc:
            raise SecretsUnavailable(f"AWS Secrets Manager is unreachable: {type(exc).__name__}") from None
        secret: str | None = value.get("SecretString")  # boto3's answers are untyped dicts
        return secret

    def put(self, tenant: str, ref: str, creds: Credentials) -> None:
        from botocore.exceptions import ClientError

        name = self.secret_name(tenant, ref)
        payload = json.dumps({"username": creds.username, "password": creds.password})
        client = self._client()
        try:
            client.put_secret_value(SecretId=name, SecretString=payload)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            client.create_secret(Name=name, SecretString=payload)

    def where(self, tenant: str, ref: str) -> str:
        return f"the AWS Secrets Manager secret '{self.prefix}{tenant}/{ref}'"


def make_backend(settings: Any) -> SecretsBackend:
    """The backend PIPELINE_SECRETS_BACKEND names (settings: service.config.Settings)."""
    kind = settings.secrets_backend
    if kind == "file":
        return FileSecrets(settings.resolved_secrets_file(), settings.resolved_encryption_key())
    if kind == "aws":
        return AwsSecrets(settings.secrets_aws_region, settings.secrets_aws_endpoint_url, settings.secrets_aws_prefix)
    return EnvSecrets()


def resolve(backend: SecretsBackend, tenant: str, ref: str) -> Credentials:
    """The credentials `ref` names for `tenant` (never another tenant's); a missing, malformed or
    unrepresentable secret is a 400 naming credentialSecretRef."""
    raw = backend.get(tenant, ref)
    if raw is None:
        message = f"secret '{ref}' not found: set {backend.where(tenant, ref)}"
        raise SecretNotFound(message, details=[{"path": "credentialSecretRef", "message": message}])
    try:
        return parse_credentials(raw)
    except ValueError as exc:
        raise _ref_error(f"{backend.where(tenant, ref)} {exc}") from None


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

    def seal_headers(self, headers: dict[str, str]) -> str:
        """An http connection's header values (any of them may be a token), encrypted like credentials."""
        return self._fernet.encrypt(json.dumps(headers).encode()).decode()

    def open_headers(self, token: str) -> dict[str, str]:
        try:
            return dict(json.loads(self._fernet.decrypt(token.encode())))
        except InvalidToken:
            raise RuntimeError("stored headers cannot be decrypted: was PIPELINE_ENCRYPTION_KEY changed?") from None
