"""Finding 9: the accepted JWT claims are defined explicitly (service/auth.py). Forged or malformed tokens are
refused with a 401 that says why; valid variants (a harmless `aud`, float times, nbf in the past) pass."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.service.helpers import Service

NOW = int(time.time())
BASE: dict[str, Any] = {"sub": "alice", "tenant_id": "acme", "roles": ["admin"], "iat": NOW, "exp": NOW + 600}
DROP = object()  # a claim value meaning "leave the claim out"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the claims are checked before any database work."""
    return f"sqlite:///{tmp_path}/svc.db"


def _token(svc: Service, changes: dict[str, Any], *, algorithm: str = "HS256", key: str | None = None) -> str:
    claims = {k: v for k, v in {**BASE, **changes}.items() if v is not DROP}
    # The cases are written relative to NOW (import time); a test may run many minutes later in the suite.
    shift = int(time.time()) - NOW
    for claim in ("exp", "nbf", "iat"):
        if type(claims.get(claim)) in (int, float):
            claims[claim] += shift
    return jwt.encode(claims, key or svc.settings.resolved_jwt_secret(), algorithm=algorithm)


def _get(svc: Service, token: str) -> Any:
    return svc.client.get("/v1/pipelines", headers={"Authorization": f"Bearer {token}", "X-Tenant-ID": "acme"})


REFUSED = [
    ("exp as a numeric string", {"exp": str(NOW + 600)}, "'exp' must be a number"),
    ("nbf as a numeric string", {"nbf": str(NOW - 10)}, "'nbf' must be a number"),
    ("iat as a numeric string", {"iat": str(NOW)}, "'iat' must be a number"),
    ("exp as a boolean", {"exp": True}, "'exp' must be a number"),
    ("exp missing", {"exp": DROP}, 'missing the "exp" claim'),
    ("sub missing", {"sub": DROP}, 'missing the "sub" claim'),
    ("tenant_id missing", {"tenant_id": DROP}, 'missing the "tenant_id" claim'),
    ("roles missing", {"roles": DROP}, 'missing the "roles" claim'),
    ("sub not a string", {"sub": 42}, "'sub' must be a non-empty string"),
    ("sub empty", {"sub": ""}, "'sub' must be a non-empty string"),
    ("expired beyond the leeway", {"exp": NOW - 60}, "expired"),
    ("not valid yet", {"nbf": NOW + 600}, "not yet valid"),
    ("tenant with a trailing newline", {"tenant_id": "acme\n"}, "'tenant_id'"),
    ("an unknown role", {"roles": ["root"]}, "'roles'"),
    ("no roles", {"roles": []}, "'roles'"),
]


@pytest.mark.parametrize(("case", "changes", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_malformed_claims_are_401(svc: Service, case: str, changes: dict[str, Any], message: str) -> None:
    """Every claim the service relies on has one accepted shape; anything else is refused, with the reason."""
    resp = _get(svc, _token(svc, changes))
    assert resp.status_code == 401, (case, resp.text)
    assert message.lower() in resp.json()["error"]["message"].lower(), (case, resp.text)


def test_forged_signatures_and_algorithms_are_401(svc: Service) -> None:
    """Only HS256 with the service's secret: no `none`, no other HMAC, no other key."""
    unsigned = jwt.encode(BASE, None, algorithm="none")
    other_alg = _token(svc, {}, algorithm="HS512")
    other_key = _token(svc, {}, key="another-secret-entirely-" * 2)
    for token in (unsigned, other_alg, other_key, "not-a-jwt", _token(svc, {})[:-4]):
        resp = _get(svc, token)
        assert resp.status_code == 401, resp.text
        assert resp.json()["error"]["message"].startswith("invalid token"), resp.text


ACCEPTED = [
    ("plain", {}),
    ("a harmless aud", {"aud": "some-other-api"}),
    ("an aud list", {"aud": ["a", "b"]}),
    ("float times", {"iat": NOW + 0.5, "exp": NOW + 600.5}),
    ("nbf in the past", {"nbf": NOW - 30}),
    ("iat missing", {"iat": DROP}),
    ("extra claims", {"email": "alice@example.com", "iss": "idp"}),
]


@pytest.mark.parametrize(("case", "changes"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_valid_variants_are_200(svc: Service, case: str, changes: dict[str, Any]) -> None:
    """Without PIPELINE_JWT_AUDIENCE an `aud` claim is not checked: an issuer's audience must not lock users out."""
    resp = _get(svc, _token(svc, changes))
    assert resp.status_code == 200, (case, resp.text)


def test_configured_audience_is_verified(svc: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """With PIPELINE_JWT_AUDIENCE set, the token must name it (alone or in a list)."""
    monkeypatch.setattr(svc.app.state, "jwt_audience", "pipeline-service")
    for aud in ("pipeline-service", ["x", "pipeline-service"]):
        assert _get(svc, _token(svc, {"aud": aud})).status_code == 200, aud
    for aud, message in ((DROP, 'missing the "aud" claim'.lower()), ("someone-else", "audience")):
        resp = _get(svc, _token(svc, {"aud": aud}))
        assert resp.status_code == 401, resp.text
        assert message in resp.json()["error"]["message"].lower(), resp.text
