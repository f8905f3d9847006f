"""The definition language: pydantic models and their validation. Imports no Airflow."""

from dag_factory.spec.expectations import known_expectations
from dag_factory.spec.models import (
    TEARDOWN_TASK_ID,
    Aggregate,
    Deduplicate,
    Filter,
    LookupJoin,
    Orchestration,
    ParameterSpec,
    PipelineDefinition,
    PostgresSink,
    PostgresSource,
    PythonStep,
    QualityCheck,
    SelectColumns,
    SqlTransform,
)
from dag_factory.spec.validate import (
    callable_allowed,
    json_path,
    sql_table_refs,
    validate_definition,
    validate_parameters,
)

__all__ = [
    "TEARDOWN_TASK_ID",
    "Aggregate",
    "Deduplicate",
    "Filter",
    "LookupJoin",
    "Orchestration",
    "ParameterSpec",
    "PipelineDefinition",
    "PostgresSink",
    "PostgresSource",
    "PythonStep",
    "QualityCheck",
    "SelectColumns",
    "SqlTransform",
    "callable_allowed",
    "json_path",
    "known_expectations",
    "sql_table_refs",
    "validate_definition",
    "validate_parameters",
]
