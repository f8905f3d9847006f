"""Bearer JWT (HS256) + X-Tenant-ID on every /v1 request; roles admin > editor > viewer."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Annotated

import jwt
from fastapi import Depends, Header, Request

from service.errors import Forbidden, Unauthorized, ValidationFailed

ROLES = ("admin", "editor", "viewer")
WRITE_ROLES = {"admin", "editor"}
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Principal:
    subject: str
    tenant_id: str
    roles: frozenset[str]

    @property
    def can_write(self) -> bool:
        return bool(self.roles & WRITE_ROLES)


def mint_token(secret: str, *, tenant: str, roles: list[str], subject: str = "local-admin", ttl: int = 86_400) -> str:
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles: {sorted(unknown)} (allowed: {', '.join(ROLES)})")
    if not TENANT_PATTERN.match(tenant):
        raise ValueError("tenant must be 1-64 characters: letters, digits, '-' or '_'")
    now = int(time.time())
    claims = {"sub": subject, "tenant_id": tenant, "roles": roles, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm="HS256")


def _decode(secret: str, token: str) -> tuple[Principal, int]:
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token has expired") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid token: {exc}") from None
    tenant, roles = claims.get("tenant_id"), claims.get("roles")
    if not isinstance(tenant, str) or not TENANT_PATTERN.match(tenant):
        raise Unauthorized("invalid token: claim 'tenant_id' is missing or malformed")
    if not isinstance(roles, list) or not roles or not set(roles) <= set(ROLES):
        raise Unauthorized(f"invalid token: claim 'roles' must be a non-empty subset of {list(ROLES)}")
    return Principal(subject=str(claims["sub"]), tenant_id=tenant, roles=frozenset(roles)), int(claims["exp"])


# Verified tokens until they expire: a client polling a status sends the same token many times a second, and
# verifying it is a tenth of such a request's cost. Keyed by secret too (several apps may share a process).
_VERIFIED: dict[tuple[str, str], tuple[Principal, int]] = {}
_VERIFIED_MAX = 10_000


def verify_token(secret: str, token: str) -> Principal:
    """The principal of a bearer token; Unauthorized when it is invalid or expired."""
    hit = _VERIFIED.get((secret, token))
    if hit is not None and hit[1] > time.time():
        return hit[0]
    principal, exp = _decode(secret, token)
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[(secret, token)] = (principal, exp)
    return principal


async def current_principal(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_tenant_id: Annotated[str | None, Header()] = None,
) -> Principal:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("missing bearer token in the Authorization header")
    principal = verify_token(request.app.state.jwt_secret, authorization[7:].strip())
    if not x_tenant_id:
        raise ValidationFailed("missing X-Tenant-ID header", details=[{"path": "X-Tenant-ID", "message": "required"}])
    if x_tenant_id != principal.tenant_id:
        raise Forbidden("X-Tenant-ID does not match the token's tenant")
    if request.method not in ("GET", "HEAD", "OPTIONS") and not principal.can_write:
        raise Forbidden("role 'viewer' cannot modify resources; an editor or admin role is required")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
