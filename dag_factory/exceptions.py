"""Errors raised by dag_factory. They never carry connection secrets."""

from __future__ import annotations


class DagFactoryError(Exception):
    """Base class of dag_factory errors."""


class DefinitionError(DagFactoryError):
    """A definition is invalid. `errors` is a list of {"path", "message"}; paths are JSON paths
    relative to the definition, e.g. `sources.raw_transactions.table` or `transformations[0].sql`."""

    def __init__(self, errors: list[dict[str, str]]):
        self.errors = errors
        first = errors[0] if errors else {"path": "", "message": "invalid definition"}
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{first['path'] or '<definition>'}: {first['message']}{more}")
