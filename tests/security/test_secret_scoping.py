"""Finding 3 of issue 11: a credentialSecretRef resolves only in the scope of the tenant whose connection
names it, in every backend (env, file, aws), and the env backend's variable names never collide.

Before the fix every tenant's ref `wh` was the one variable PIPELINE_SECRET_WH (the one file entry, the one
AWS secret): tenant B could bind tenant A's secret to a connection of its own and have the connection test
send it to a host B chose."""

from __future__ import annotations

import io
import itertools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from connections import Credentials
from service import cli
from service.config import Settings
from service.errors import ValidationFailed
from service.secrets import AwsSecrets, EnvSecrets, FileSecrets, env_var_for, resolve
from tests.connections.servers import MotoServer
from tests.security.service_app import running_service
from tests.service.helpers import Service, connection_body, expect_error

URL = "/v1/pipelines/connections"
A_SECRET = "tenant-a-only-" + uuid.uuid4().hex  # unique per run: finding it anywhere means a leak


def _creds_json(password: str, username: str = "etl") -> str:
    return json.dumps({"username": username, "password": password})


def _decode(var: str) -> tuple[str, str]:
    """The inverse of env_var_for as its docstring states it: split at the first '__', lower-case, '_' → '-'.
    That it recovers every accepted pair is what makes two pairs unable to share a variable."""
    tenant, ref = var.removeprefix("PIPELINE_SECRET_").split("__", 1)
    return tenant.lower().replace("_", "-"), ref.lower().replace("_", "-")


# -- the env naming ----------------------------------------------------------------------------------------
def test_env_variable_names_the_tenant_and_the_ref() -> None:
    assert env_var_for("default", "sales-db-credentials") == "PIPELINE_SECRET_DEFAULT__SALES_DB_CREDENTIALS"
    assert env_var_for("acme", "wh") != env_var_for("globex", "wh")


def test_no_two_tenant_ref_pairs_share_an_env_variable() -> None:
    """Every tenant/ref of up to 3 characters over an alphabet holding each troublesome character (case,
    '-', '_', '.'): each accepted pair gets its own variable, which decodes back to exactly that pair."""
    alphabet = "aB0-_."
    names = ["".join(p) for n in range(1, 4) for p in itertools.product(alphabet, repeat=n)]
    seen: dict[str, tuple[str, str]] = {}
    accepted = 0
    for tenant, ref in itertools.product(names, names):
        try:
            var = env_var_for(tenant, ref)
        except ValidationFailed:
            continue
        accepted += 1
        assert var not in seen, f"{(tenant, ref)} and {seen[var]} share {var}"
        seen[var] = (tenant, ref)
        assert _decode(var) == (tenant, ref)
    assert accepted > 100  # the guard above is not vacuous


@pytest.mark.parametrize(
    ("tenant", "ref", "named"),
    [
        ("acme", "db_creds", "'db_creds'"),  # '_' and '-' would both be '_'
        ("acme", "Db-creds", "'Db-creds'"),  # upper and lower case would be one name
        ("acme", "prod.db", "'prod.db'"),
        ("acme", "a--b", "'a--b'"),  # '__' is the tenant/ref separator
        ("acme", "db-", "'db-'"),  # 'acme' + '__' + 'db_' vs ...: no part may end in '_'
        ("Acme", "db", "tenant id 'Acme'"),
        ("sales_eu", "db", "tenant id 'sales_eu'"),
        ("acme-", "db", "tenant id 'acme-'"),
        ("ac/me", "db", "tenant 'ac/me'"),
    ],
)
def test_env_backend_refuses_what_it_cannot_name_one_to_one(tenant: str, ref: str, named: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        resolve(EnvSecrets(), tenant, ref)
    assert named in err.value.message
    assert err.value.details == [{"path": "credentialSecretRef", "message": err.value.message}]


def test_env_backend_resolves_only_the_tenants_own_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env_var_for("acme", "wh"), _creds_json(A_SECRET))
    monkeypatch.setenv("PIPELINE_SECRET_WH", _creds_json(A_SECRET))  # the name refs had before they were scoped
    backend = EnvSecrets()
    assert resolve(backend, "acme", "wh") == Credentials("etl", A_SECRET)
    assert backend.get("globex", "wh") is None
    with pytest.raises(ValidationFailed) as err:
        resolve(backend, "globex", "wh")
    assert "PIPELINE_SECRET_GLOBEX__WH" in err.value.message and A_SECRET not in err.value.message


# -- the file and aws backends -------------------------------------------------------------------------------
def test_file_backend_keys_secrets_by_tenant_and_ref(tmp_path: Path) -> None:
    backend = FileSecrets(tmp_path / "secrets.fernet", Fernet.generate_key().decode())
    backend.put("acme", "wh", Credentials("etl", A_SECRET))
    backend.put("globex", "other", Credentials("b", "b-pw"))
    assert resolve(backend, "acme", "wh").password == A_SECRET
    assert backend.get("globex", "wh") is None and backend.get("acme", "other") is None
    assert "secret put --tenant globex wh" in backend.where("globex", "wh")


def test_file_backend_never_resolves_entries_stored_before_refs_were_scoped(tmp_path: Path) -> None:
    """A file of the old layout (one object by ref) names no tenant: its entries must not serve anyone."""
    key = Fernet.generate_key()
    path = tmp_path / "secrets.fernet"
    path.write_bytes(Fernet(key).encrypt(json.dumps({"wh": {"username": "etl", "password": A_SECRET}}).encode()))
    backend = FileSecrets(path, key.decode())
    assert backend.get("acme", "wh") is None and backend.get("wh", "wh") is None
    backend.put("acme", "new", Credentials("n", "n-pw"))
    assert backend.get("acme", "wh") is None and backend.get("acme", "new") is not None
    stored = json.loads(Fernet(key).decrypt(path.read_bytes()))
    assert stored["unscoped"] == {"wh": {"username": "etl", "password": A_SECRET}}  # kept, not dropped


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer.start()
    yield server
    server.stop()


def test_aws_backend_names_secrets_prefix_tenant_slash_ref(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    backend = AwsSecrets("us-east-1", moto.url, prefix="pipelines/")
    ref = "wh-" + uuid.uuid4().hex[:6]
    backend.put("acme", ref, Credentials("etl", A_SECRET))
    client = backend._client()
    assert json.loads(client.get_secret_value(SecretId=f"pipelines/acme/{ref}")["SecretString"])["password"] == A_SECRET
    assert resolve(backend, "acme", ref).password == A_SECRET
    assert backend.get("globex", ref) is None
    client.create_secret(Name=f"pipelines/{ref}", SecretString=_creds_json(A_SECRET))  # an unscoped name
    assert backend.get("globex", ref) is None
    with pytest.raises(ValidationFailed):
        backend.get("acme/../globex", ref)  # a tenant can never carry a '/' into the name


# -- through the API and the CLI -----------------------------------------------------------------------------
@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Service]:
    with running_service(tmp_path) as service:
        yield service


def test_tenant_b_cannot_bind_tenant_a_secret(svc: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """B names A's ref: 400 naming credentialSecretRef, and A's secret is nowhere in B's answers or in B's
    Airflow connection. The unscoped variable is set too: the old code resolved it for everyone. (Variable
    names spelled out: this is the documented naming.)"""
    acme, globex = svc.api("acme"), svc.api("globex")
    monkeypatch.setenv("PIPELINE_SECRET_ACME__WH", _creds_json(A_SECRET))
    monkeypatch.setenv("PIPELINE_SECRET_WH", _creds_json(A_SECRET))
    acme.create_connection("warehouse", credentials=None, credentialSecretRef="wh")
    assert svc.fake.connections["acme.warehouse"]["password"] == A_SECRET

    resp = globex.post(URL, json=connection_body("stolen", credentials=None, credentialSecretRef="wh"))
    error = expect_error(resp, 400, "validation_error", path="credentialSecretRef")
    assert "PIPELINE_SECRET_GLOBEX__WH" in error["message"] and A_SECRET not in resp.text
    assert "globex.stolen" not in svc.fake.connections

    monkeypatch.setenv("PIPELINE_SECRET_GLOBEX__WH", _creds_json("globex-own-pw", "b"))
    conn = globex.create_connection("mine", credentials=None, credentialSecretRef="wh")
    assert svc.fake.connections["globex.mine"]["password"] == "globex-own-pw"
    monkeypatch.delenv("PIPELINE_SECRET_GLOBEX__WH")
    tested = globex.post(f"{URL}/{conn['connectionId']}/test")
    assert (tested.json()["connected"], tested.json()["failedStage"]) == (False, "credentials")
    assert A_SECRET not in tested.text and A_SECRET not in globex.get(URL).text


def test_s3_connection_without_credentials_is_refused(svc: Service) -> None:
    """Without keys the workers' own AWS identity would reach the bucket: the same one for every tenant."""
    body = {"name": "lake", "type": "s3", "properties": {"bucket": "raw-data"}}
    expect_error(svc.api("acme").post(URL, json=body), 400, "validation_error", path="credentialSecretRef")


def test_secret_put_needs_the_tenant_and_stores_for_it_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PIPELINE_SECRETS_BACKEND", "file")
    monkeypatch.setattr("sys.stdin", io.StringIO(_creds_json(A_SECRET)))
    with pytest.raises(SystemExit):
        cli.main(["secret", "put", "wh"])
    assert cli.main(["secret", "put", "--tenant", "acme", "wh"]) == 0
    settings = Settings()
    backend = FileSecrets(settings.resolved_secrets_file(), settings.resolved_encryption_key())
    assert backend.get("acme", "wh") is not None and backend.get("globex", "wh") is None
    assert cli.main(["secret", "put", "--tenant", "ac.me", "wh"]) == 2  # not a tenant id
