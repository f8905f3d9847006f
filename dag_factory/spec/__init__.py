"""The definition language: pydantic models and their validation. Imports no Airflow."""

from dag_factory.spec import task_ids
from dag_factory.spec.expectations import known_expectations
from dag_factory.spec.models import (
    Aggregate,
    Deduplicate,
    Filter,
    Incremental,
    LookupJoin,
    Orchestration,
    ParameterSpec,
    Partitions,
    PipelineDefinition,
    PostgresSink,
    PostgresSource,
    PythonStep,
    QualityCheck,
    SelectColumns,
    SqlSink,
    SqlSource,
    SqlTransform,
)
from dag_factory.spec.task_ids import QUALITY_PREFIX, TEARDOWN_TASK_ID
from dag_factory.spec.validate import (
    callable_allowed,
    json_path,
    sql_table_refs,
    validate_definition,
    validate_parameters,
)

__all__ = [
    "QUALITY_PREFIX",
    "TEARDOWN_TASK_ID",
    "Aggregate",
    "Deduplicate",
    "Filter",
    "Incremental",
    "LookupJoin",
    "Orchestration",
    "ParameterSpec",
    "Partitions",
    "PipelineDefinition",
    "PostgresSink",
    "PostgresSource",
    "PythonStep",
    "QualityCheck",
    "SelectColumns",
    "SqlSink",
    "SqlSource",
    "SqlTransform",
    "callable_allowed",
    "json_path",
    "known_expectations",
    "sql_table_refs",
    "task_ids",
    "validate_definition",
    "validate_parameters",
]
