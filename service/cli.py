"""`pipeline-service` command: `up` (Airflow + service in the foreground), `up-distributed` (the distributed
profile, service/distributed.py), `serve`, `token`, `secret put`."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from connections.network import LOOPBACK_NETWORKS
from service.auth import ROLES, mint_token
from service.config import Settings
from service.pipelines.dagfile import ensure_sentinel


def _token(args: argparse.Namespace) -> int:
    settings = Settings()
    try:
        token = mint_token(
            settings.resolved_jwt_secret(), tenant=args.tenant, roles=args.role, subject=args.sub, ttl=args.ttl
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _secret_put(args: argparse.Namespace) -> int:
    """Store JSON {"username", "password"} read from stdin under (tenant, ref) in the configured backend.

    The tenant is required: a ref resolves only for the tenant it was stored for (service/secrets.py)."""
    from service.errors import ValidationFailed
    from service.secrets import check_names, make_backend, parse_credentials

    settings = Settings()
    try:
        check_names(args.tenant, args.ref)
    except ValidationFailed as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    backend = make_backend(settings)
    put = getattr(backend, "put", None)
    if put is None:
        print(
            f"error: PIPELINE_SECRETS_BACKEND is '{settings.secrets_backend}': set "
            f"{backend.where(args.tenant, args.ref)} instead (or use PIPELINE_SECRETS_BACKEND=file or aws)",
            file=sys.stderr,
        )
        return 2
    try:
        creds = parse_credentials(sys.stdin.read())
    except ValueError as exc:
        print(f"error: stdin {exc}", file=sys.stderr)  # the value itself is never echoed
        return 2
    put(args.tenant, args.ref, creds)
    print(f"stored secret '{args.ref}' of tenant '{args.tenant}' ({backend.name} backend)")
    return 0


def _serve(settings: Settings) -> None:
    import uvicorn

    from service.main import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info", access_log=False)


def _reachable(host: str) -> str:
    """The address Airflow, on this machine, calls the service at (a wildcard bind is reached on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)


def _up(args: argparse.Namespace) -> int:
    from service.stack import AirflowStack

    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not settings.allowed_networks:  # the local tour's databases are on this machine
        settings.allowed_networks = LOOPBACK_NETWORKS
    stack = AirflowStack(
        settings.airflow_home,
        settings.airflow_port,
        settings.dags_dir,
        args.airflow_database_url,
        allowed_networks=settings.allowed_networks,
        denied_endpoints=(f"{settings.host}:{settings.port}", *filter(None, settings.denied_endpoints.split(","))),
        # Airflow's OpenLineage events go to this service's POST /api/v1/lineage.
        lineage_url=f"http://{_reachable(settings.host)}:{settings.port}",
        lineage_api_key=settings.resolved_openlineage_api_key(),
    )
    ensure_sentinel(settings.dags_dir)  # before Airflow starts, so its first scan sees it
    print(f"initialising Airflow's database in {settings.airflow_home} ...", flush=True)
    stack.migrate()
    stack.start()
    try:
        print("starting Airflow (api-server, scheduler, dag-processor, triggerer) ...", flush=True)
        stack.wait_healthy()
        token = mint_token(settings.resolved_jwt_secret(), tenant=args.tenant, roles=["admin"], subject="local-admin")
        print(
            "\n"
            f"  Pipeline Service  http://{settings.host}:{settings.port}   (API docs: /docs)\n"
            f"  Airflow UI        {stack.url}   (user admin, password: {stack.password_file})\n"
            f"  Admin token for tenant '{args.tenant}' (24 h):\n\n"
            f"    export TOKEN={token}\n"
            f"    export TENANT={args.tenant}\n\n"
            f"  Network policy: connections may reach public addresses and {settings.allowed_networks}\n"
            "  (PIPELINE_ALLOWED_NETWORKS; make up allows loopback for the local tour), never the service's or\n"
            "  Airflow's own ports, link-local / metadata or multicast addresses.\n\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        _serve(settings)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping Airflow ...", flush=True)
        stack.stop()
    return 0


def _up_distributed(args: argparse.Namespace) -> int:
    from service.distributed import Profile

    settings = Settings()
    profile = Profile(
        settings.data_dir / "distributed",
        pg_admin_url=args.postgres,
        broker_url=args.broker,
        airflow_port=settings.airflow_port,
        service_ports=(settings.port, settings.port + 1),
        s3_port=args.s3_port,
    )
    try:
        profile.start(progress=True)
        token = profile.token(args.tenant, subject="local-admin")
        stack = profile.airflow()
        print(
            "\n"
            f"  Pipeline Service  {profile.service_url(0)} and {profile.service_url(1)} (two replicas, one database)\n"
            f"  Airflow UI        {stack.url}   (user admin, password: {stack.password_file})\n"
            f"  Celery workers    {', '.join(stack.distributed.workers if stack.distributed else ())} "
            f"(broker {profile.broker_url})\n"
            f"  DAG bundle, logs  s3://{profile.bucket} on {profile.s3_url} (moto)\n"
            f"  Admin token for tenant '{args.tenant}' (24 h):\n\n"
            f"    export TOKEN={token}\n"
            f"    export TENANT={args.tenant}\n\n"
            f"  Logs in {profile.data_dir}/logs and {stack.home}/logs. Ctrl-C stops everything.\n",
            flush=True,
        )
        while True:
            for index, proc in list(profile.replicas.items()):
                if proc.poll() is not None:
                    print(f"service replica {index + 1} exited ({proc.returncode}); restarting it", flush=True)
                    profile.start_replica(index)
            time.sleep(2)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping ...", flush=True)
        profile.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Airflow call drowns the useful ones
    parser = argparse.ArgumentParser(prog="pipeline-service")
    sub = parser.add_subparsers(dest="command", required=True)
    tok = sub.add_parser("token", help="mint a JWT for local use")
    tok.add_argument("--tenant", required=True)
    tok.add_argument("--role", action="append", choices=ROLES, required=True, help="repeat for several roles")
    tok.add_argument("--sub", default="local-user", help="the token's subject (user)")
    tok.add_argument("--ttl", type=int, default=86_400, help="lifetime in seconds")
    sub.add_parser("serve", help="run the API only (Airflow must already run)")
    up = sub.add_parser("up", help="start Airflow and the service in the foreground")
    up.add_argument("--tenant", default="default", help="tenant of the printed admin token")
    up.add_argument(
        "--airflow-database-url", default=None, help="Airflow metadata DB (default: SQLite in the data dir)"
    )
    dist = sub.add_parser(
        "up-distributed",
        help="the distributed profile: Airflow on PostgreSQL with Celery (2 workers), an S3 DAG bundle, 2 replicas",
    )
    dist.add_argument("--tenant", default="default", help="tenant of the printed admin token")
    dist.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL server's admin URL: databases pipeline_airflow and pipeline_service are created there",
    )
    dist.add_argument("--broker", default="redis://127.0.0.1:6379/0", help="Celery broker (Redis or RabbitMQ URL)")
    dist.add_argument("--s3-port", type=int, default=9000, help="port of the local S3 server (moto)")
    secret = sub.add_parser("secret", help="manage credentialSecretRef secrets (file or aws backend)")
    secret_sub = secret.add_subparsers(dest="secret_command", required=True)
    put = secret_sub.add_parser("put", help='store JSON {"username": ..., "password": ...} read from stdin')
    put.add_argument("--tenant", required=True, help="the tenant whose connections may use the secret")
    put.add_argument("ref", help="the credentialSecretRef the tenant's connections will use")
    args = parser.parse_args(argv)
    if args.command == "secret":
        return _secret_put(args)
    if args.command == "token":
        return _token(args)
    if args.command == "up-distributed":
        return _up_distributed(args)
    if args.command == "serve":
        _serve(Settings())
        return 0
    return _up(args)


if __name__ == "__main__":
    sys.exit(main())
