"""Every table, for Alembic's metadata."""

from service.audit.models import AuditEntry
from service.connections.models import Connection
from service.cost.models import Budget
from service.db import Base
from service.executions.models import AdmissionLock, Execution, ExecutionTask
from service.lineage.models import LineageDataset, LineageEvent
from service.monitoring.models import Alert, AlertDelivery, AlertWebhook
from service.pipelines.models import Pipeline, PipelineVersion
from service.schedules.models import Schedule
from service.templates.models import TenantTemplate
from service.workflows.models import ApprovalAnswer, ApprovalGate

__all__ = [
    "AdmissionLock",
    "Alert",
    "AlertDelivery",
    "AlertWebhook",
    "ApprovalAnswer",
    "ApprovalGate",
    "AuditEntry",
    "Base",
    "Budget",
    "Connection",
    "Execution",
    "ExecutionTask",
    "LineageDataset",
    "LineageEvent",
    "Pipeline",
    "PipelineVersion",
    "Schedule",
    "TenantTemplate",
]
