"""Every table, for Alembic's metadata."""

from service.connections.models import Connection
from service.cost.models import Budget
from service.db import Base
from service.executions.models import AdmissionLock, Execution
from service.lineage.models import LineageDataset, LineageEvent
from service.pipelines.models import Pipeline, PipelineVersion
from service.schedules.models import Schedule
from service.templates.models import TenantTemplate

__all__ = [
    "AdmissionLock",
    "Base",
    "Budget",
    "Connection",
    "Execution",
    "LineageDataset",
    "LineageEvent",
    "Pipeline",
    "PipelineVersion",
    "Schedule",
    "TenantTemplate",
]
