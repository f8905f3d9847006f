"""Bearer JWT (HS256) + X-Tenant-ID on every /v1 request; roles admin > editor > viewer."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import jwt
from fastapi import Depends, Header, Request

from service.errors import Forbidden, Unauthorized, ValidationFailed

if TYPE_CHECKING:
    from jwt.types import Options  # PyJWT >= 2.10; only its type is used

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
    if not TENANT_PATTERN.fullmatch(tenant):
        raise ValueError("tenant must be 1-64 characters: letters, digits, '-' or '_'")
    now = int(time.time())
    claims = {"sub": subject, "tenant_id": tenant, "roles": roles, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm="HS256")


# The claims a token must carry; `aud` is checked only where an audience is configured (PIPELINE_JWT_AUDIENCE),
# otherwise an issuer's harmless `aud` must not make a valid token fail.
REQUIRED_CLAIMS = ["exp", "sub", "tenant_id", "roles"]
NUMERIC_CLAIMS = ("exp", "nbf", "iat")
LEEWAY_SECONDS = 5  # clock skew between the token's issuer and this service
_SIGNATURE_ONLY: Options = {
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
}


def _decode(secret: str, token: str, audience: str | None = None) -> tuple[Principal, int]:
    try:
        # First the signature alone, so that the claims' types are judged before PyJWT reads them with int().
        _check_claim_types(jwt.decode(token, secret, algorithms=["HS256"], options=_SIGNATURE_ONLY))
        options: Options = {"require": REQUIRED_CLAIMS, "verify_aud": audience is not None, "strict_aud": False}
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], audience=audience, leeway=LEEWAY_SECONDS, options=options
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token has expired") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid token: {exc}") from None
    tenant, roles = claims.get("tenant_id"), claims.get("roles")
    if not isinstance(tenant, str) or not TENANT_PATTERN.fullmatch(tenant):
        raise Unauthorized("invalid token: claim 'tenant_id' is missing or malformed")
    if not isinstance(roles, list) or not roles or not set(roles) <= set(ROLES):
        raise Unauthorized(f"invalid token: claim 'roles' must be a non-empty subset of {list(ROLES)}")
    return Principal(subject=claims["sub"], tenant_id=tenant, roles=frozenset(roles)), int(claims["exp"])


def _check_claim_types(claims: dict[str, Any]) -> None:
    """PyJWT reads the time claims through int(), so "9999999999" (a string) would pass: RFC 7519 says
    NumericDate, a JSON number. `sub` must be a non-empty string (the principal's name in audit fields)."""
    for name in NUMERIC_CLAIMS:
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise Unauthorized(f"invalid token: claim '{name}' must be a number (seconds since the epoch)")
    if "sub" in claims and (not isinstance(claims["sub"], str) or not claims["sub"]):
        raise Unauthorized("invalid token: claim 'sub' must be a non-empty string")


# Verified tokens until they expire: a client polling a status sends the same token many times a second, and
# verifying it is a tenth of such a request's cost. Keyed by secret too (several apps may share a process).
_VERIFIED: dict[tuple[str, str, str | None], tuple[Principal, int]] = {}
_VERIFIED_MAX = 10_000


def verify_token(secret: str, token: str, audience: str | None = None) -> Principal:
    """The principal of a bearer token; Unauthorized when it is invalid or expired."""
    key = (secret, token, audience)
    hit = _VERIFIED.get(key)
    if hit is not None and hit[1] > time.time():
        return hit[0]
    principal, exp = _decode(secret, token, audience)
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[key] = (principal, exp)
    return principal


async def current_principal(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_tenant_id: Annotated[str | None, Header()] = None,
) -> Principal:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("missing bearer token in the Authorization header")
    principal = verify_token(request.app.state.jwt_secret, authorization[7:].strip(), request.app.state.jwt_audience)
    if not x_tenant_id:
        raise ValidationFailed("missing X-Tenant-ID header", details=[{"path": "X-Tenant-ID", "message": "required"}])
    if x_tenant_id != principal.tenant_id:
        raise Forbidden("X-Tenant-ID does not match the token's tenant")
    if request.method not in ("GET", "HEAD", "OPTIONS") and not principal.can_write:
        raise Forbidden("role 'viewer' cannot modify resources; an editor or admin role is required")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
