"""Connection types: what each accepts, how it is tested, how it becomes an Airflow connection.
No service or airflow imports."""

from connections.testing import Stage, TestResult, check_connection
from connections.types import (
    CONNECTION_TYPES,
    ConnectionSpec,
    Credentials,
    InvalidConnection,
    airflow_connection,
    build_spec,
)

__all__ = [
    "CONNECTION_TYPES",
    "ConnectionSpec",
    "Credentials",
    "InvalidConnection",
    "Stage",
    "TestResult",
    "airflow_connection",
    "build_spec",
    "check_connection",
]
