"""What happens when an execution is seen to finish, for features above executions (monitoring raises and
resolves alerts, ...): they register a hook once (service.main wires them); sync calls the hooks in the
transaction that stores the new status, so whatever a hook writes lands with the status or not at all.

A hook must not break the transaction: it only adds or updates rows, and anything that could violate a
constraint it runs inside `session.begin_nested()` (a savepoint). An exception is logged, not raised."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.orm import Session

from service.executions.models import Execution

log = logging.getLogger(__name__)

# (session, the execution with its new terminal status, the status it had before)
FinishedHook = Callable[[Session, Execution, str], None]

_finished: list[FinishedHook] = []


def on_finished(hook: FinishedHook) -> None:
    """Register `hook` (once: registering the same function again does nothing)."""
    if hook not in _finished:
        _finished.append(hook)


def finished(session: Session | None, ex: Execution, previous: str) -> None:
    if session is None:
        return
    for hook in _finished:
        try:
            hook(session, ex, previous)
        except Exception:
            log.exception("execution %s finished: hook %s failed", ex.id, getattr(hook, "__name__", hook))
