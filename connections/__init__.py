"""Connection types: what each accepts, and how it becomes an Airflow connection. No service imports."""

from connections.types import CONNECTION_TYPES, ConnectionSpec, Credentials, airflow_connection

__all__ = ["CONNECTION_TYPES", "ConnectionSpec", "Credentials", "airflow_connection"]
