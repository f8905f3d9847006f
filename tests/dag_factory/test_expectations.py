"""The expectation names shipped as data match great-expectations' registry (regenerate with
`python -m dag_factory.spec.expectations` after upgrading great-expectations)."""

from __future__ import annotations

from dag_factory.spec.expectations import known_expectations, registered_expectations


def test_known_expectations_match_the_registry():
    assert sorted(known_expectations()) == registered_expectations()
    assert "expect_column_values_to_not_be_null" in known_expectations()
