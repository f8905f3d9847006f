"""Airflow operators of the pipeline DAGs (ELT: stage, transform in SQL, load, check).

Each run works in its own staging schema, `staging_schema(run_id, dag_id)`, of the staging database.
"""

from dag_factory.operators.approval import ApprovalGateOperator
from dag_factory.operators.extract import ExtractOperator, PlanPartitionsOperator, UnionPartitionsOperator
from dag_factory.operators.load import LoadTableOperator
from dag_factory.operators.objects import StageHttpOperator, StageObjectsOperator, WriteObjectsOperator
from dag_factory.operators.python import PythonStepOperator
from dag_factory.operators.quality import QualityCheckOperator
from dag_factory.operators.sql import SqlTransformOperator
from dag_factory.operators.sql_load import SqlLoadOperator
from dag_factory.operators.staging import (
    CleanupStagingOperator,
    PrepareStagingOperator,
    StageTableOperator,
    run_schema,
    staging_schema,
)
from dag_factory.operators.watermark import CommitWatermarksOperator
from dag_factory.spec.task_ids import WATERMARK_TASK_ID

__all__ = [
    "WATERMARK_TASK_ID",
    "ApprovalGateOperator",
    "CommitWatermarksOperator",
    "ExtractOperator",
    "PlanPartitionsOperator",
    "SqlLoadOperator",
    "UnionPartitionsOperator",
    "CleanupStagingOperator",
    "LoadTableOperator",
    "PrepareStagingOperator",
    "PythonStepOperator",
    "QualityCheckOperator",
    "SqlTransformOperator",
    "StageHttpOperator",
    "StageObjectsOperator",
    "StageTableOperator",
    "WriteObjectsOperator",
    "run_schema",
    "staging_schema",
]
