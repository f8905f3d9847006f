"""Run by `make test` before pytest: the end-to-end tests need the local PostgreSQL server (and Redis's binaries)."""

import os
import shutil
import sys

import psycopg

url = os.environ.get("PIPELINE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
try:
    psycopg.connect(url, connect_timeout=5).close()
except psycopg.OperationalError as exc:
    print(
        f"PostgreSQL does not answer at {url}: {str(exc).strip().splitlines()[0]}\n"
        "The tests move data through a real PostgreSQL server. Start the local one, e.g.:\n"
        "  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
        "or point PIPELINE_TEST_PG_URL at a server where the user may create databases.",
        file=sys.stderr,
    )
    sys.exit(2)

# The reliability tests (tests/reliability) run a Redis of their own as Celery's broker.
if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
    print(
        "redis-server / redis-cli not found: tests/reliability runs its own Redis as the Celery broker of the\n"
        "distributed profile. Install Debian's redis-server package (apt-get install redis-server).",
        file=sys.stderr,
    )
    sys.exit(2)
