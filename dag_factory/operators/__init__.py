"""Airflow operators of the pipeline DAGs (ELT: stage, transform in SQL, load, check).

Each run works in its own staging schema, `staging_schema(run_id)`, of the staging database.
"""

from dag_factory.operators.load import LoadTableOperator
from dag_factory.operators.python import PythonStepOperator
from dag_factory.operators.quality import QualityCheckOperator
from dag_factory.operators.sql import SqlTransformOperator
from dag_factory.operators.staging import (
    CleanupStagingOperator,
    PrepareStagingOperator,
    StageTableOperator,
    staging_schema,
)

__all__ = [
    "CleanupStagingOperator",
    "LoadTableOperator",
    "PrepareStagingOperator",
    "PythonStepOperator",
    "QualityCheckOperator",
    "SqlTransformOperator",
    "StageTableOperator",
    "staging_schema",
]
