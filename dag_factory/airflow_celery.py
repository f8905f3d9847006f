"""Celery settings of the distributed profile (`[celery] celery_config_options`, service/stack.py): Airflow's
defaults, and a broker outage waited out instead of failing the tasks being queued.

Airflow's CeleryExecutor fails a task at once when publishing its message raises (the broker is down), but
publishes it again at its next heartbeats when the publish only timed out (`[celery] operation_timeout`,
`task_publish_max_retries` times). So kombu keeps retrying the connection inside the publish until the timeout
cuts it short: a Redis restart costs a few heartbeats, not the runs."""

from __future__ import annotations

from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

CELERY_CONFIG: dict[str, Any] = {
    **DEFAULT_CELERY_CONFIG,
    "task_publish_retry": True,
    "task_publish_retry_policy": {"max_retries": 1000, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1},
}
