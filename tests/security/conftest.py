"""Fixtures of the security tests: the service's API fixtures (the app on SQLite and on PostgreSQL, wired to
the fake Airflow), shared with tests/service. A module may narrow `database_url` to SQLite alone."""

from tests.service.conftest import acme, active, api, database_url, pg_database, svc

__all__ = ["acme", "active", "api", "database_url", "pg_database", "svc"]
