"""The definition language: pydantic models and their validation. Imports no Airflow."""

from dag_factory.spec.models import (
    TEARDOWN_TASK_ID,
    LookupJoin,
    Orchestration,
    ParameterSpec,
    PipelineDefinition,
    PostgresSink,
    PostgresSource,
    QualityCheck,
    SqlTransform,
)
from dag_factory.spec.validate import json_path, validate_definition, validate_parameters

__all__ = [
    "TEARDOWN_TASK_ID",
    "LookupJoin",
    "Orchestration",
    "ParameterSpec",
    "PipelineDefinition",
    "PostgresSink",
    "PostgresSource",
    "QualityCheck",
    "SqlTransform",
    "json_path",
    "validate_definition",
    "validate_parameters",
]
