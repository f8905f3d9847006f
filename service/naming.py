"""Tenant-namespaced names in Airflow. Tenant ids never contain '.', so '<tenant>.<name>' is unambiguous."""

from __future__ import annotations

import re

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$"
SENTINEL_DAG_ID = "pipeline_service_sentinel"


def dag_id(tenant_id: str, pipeline_name: str) -> str:
    return f"{tenant_id}.{pipeline_name}"


def airflow_conn_id(tenant_id: str, connection_name: str) -> str:
    return f"{tenant_id}.{connection_name}"


def owns_dag(tenant_id: str, dag_id_: str) -> bool:
    return dag_id_.startswith(tenant_id + ".")


def dag_file_name(dag_id_: str) -> str:
    """One file per DAG id: the id itself (letters, digits, '_', '-', '.') is a safe, unique file name."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", dag_id_):
        raise ValueError(f"not a DAG id: {dag_id_!r}")
    return f"pipeline_{dag_id_}.py"
