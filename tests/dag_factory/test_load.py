"""The load modes (dag_factory.hooks.load): one definition, one set of error texts, for every sink database.
Against databases: test_operators.py (PostgreSQL) and test_sql_io.py (SQLite, SQLAlchemy into PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from dag_factory.hooks.load import LoadError, check_mode, columns_written, load


class Recorder:
    """A LoadTarget that records the statements a load runs."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def delete_all(self) -> None:
        self.calls.append("delete_all")

    def delete_matching(self, keys: Sequence[str]) -> None:
        self.calls.append(f"delete_matching {','.join(keys)}")

    def insert(self) -> int:
        self.calls.append("insert")
        return 7


@pytest.mark.parametrize(
    ("mode", "keys", "calls"),
    [
        ("append", None, ["insert"]),
        ("overwrite", None, ["delete_all", "insert"]),
        ("merge", ["id", "day"], ["delete_matching id,day", "insert"]),
    ],
)
def test_each_mode_runs_its_statements_in_order(mode: str, keys: list[str] | None, calls: list[str]) -> None:
    target = Recorder()
    check_mode(mode, keys)
    assert load(target, mode, keys) == 7
    assert target.calls == calls


def test_a_mode_that_cannot_work_is_named() -> None:
    with pytest.raises(LoadError, match=r"load mode must be one of append, overwrite, merge, not 'upsert'"):
        check_mode("upsert", None)
    with pytest.raises(LoadError, match=r"load mode 'merge' needs keys"):
        check_mode("merge", [])


def test_columns_written_are_the_shared_ones_in_the_tables_order() -> None:
    assert columns_written("d", "t", {"c", "a", "x"}, ["a", "b", "c"], "append", None) == ["a", "c"]
    with pytest.raises(LoadError, match=r"dataset 'd' and table 't' share no column"):
        columns_written("d", "t", {"x"}, ["a"], "overwrite", None)


def test_missing_merge_keys_are_named_with_where_they_are_missing() -> None:
    with pytest.raises(LoadError) as info:
        columns_written("d", "t", {"id", "a"}, ["a", "k"], "merge", ["id", "k"])
    assert str(info.value) == "merge key columns missing: 'k' (not in dataset 'd'), 'id' (not in table 't')"
