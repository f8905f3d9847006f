"""Resolving credentialSecretRef values and encrypting inline credentials at rest."""

from __future__ import annotations

import json
import os
import re

from cryptography.fernet import Fernet, InvalidToken

from connections import Credentials
from service.errors import ValidationFailed

REF_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


def env_var_for(ref: str) -> str:
    return "PIPELINE_SECRET_" + re.sub(r"[^A-Z0-9]", "_", ref.upper())


def resolve_secret_ref(ref: str) -> Credentials:
    """A secret ref names the environment variable PIPELINE_SECRET_<REF> holding {"username","password"}."""
    var = env_var_for(ref)
    raw = os.environ.get(var)
    path = [{"path": "credentialSecretRef", "message": ""}]
    if raw is None:
        path[0]["message"] = f"secret '{ref}' not found: set the environment variable {var}"
        raise ValidationFailed(path[0]["message"], details=path)
    try:
        data = json.loads(raw)
        return Credentials(username=str(data["username"]), password=data.get("password"))
    except (ValueError, KeyError, TypeError):
        # The value itself is never echoed: it is a secret.
        path[0]["message"] = f'{var} must hold JSON {{"username": ..., "password": ...}}'
        raise ValidationFailed(path[0]["message"], details=path) from None


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
