"""Names of the great-expectations expectations a quality check may use.

The service validates definitions without importing great-expectations (it takes seconds), so the names
ship as data: `expectations.txt`, generated from great-expectations' registry by running this module
(`python -m dag_factory.spec.expectations`). tests/dag_factory/test_expectations.py checks it is current.
"""

from __future__ import annotations

import functools
from pathlib import Path

NAMES_FILE = Path(__file__).with_name("expectations.txt")


@functools.cache
def known_expectations() -> frozenset[str]:
    return frozenset(line for line in NAMES_FILE.read_text().split() if line)


def registered_expectations() -> list[str]:
    """The names great-expectations itself registers (imports it: for the generator and its test only)."""
    import os

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations  # noqa: F401 - registers the core expectations
    from great_expectations.expectations.registry import list_registered_expectation_implementations

    return sorted(n for n in list_registered_expectation_implementations() if n.startswith("expect_"))


if __name__ == "__main__":
    NAMES_FILE.write_text("\n".join(registered_expectations()) + "\n")
    print(f"wrote {NAMES_FILE}")
