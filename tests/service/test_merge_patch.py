"""RFC 7396 merge semantics (service/merge_patch.py), with the RFC's own examples."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from service.errors import ValidationFailed
from service.merge_patch import merge_patch, patched
from service.schedules.schemas import ScheduleIn

# RFC 7396 appendix A: (original, patch, result).
APPENDIX_A: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("original", "patch", "result"), APPENDIX_A)
def test_rfc_7396_appendix_a(original: Any, patch: Any, result: Any) -> None:
    assert merge_patch(original, patch) == result


def test_rfc_7396_section_3_example_and_no_argument_is_modified() -> None:
    original = {
        "title": "Goodbye!",
        "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"],
        "content": "This will be unchanged",
    }
    patch = {"title": "Hello!", "phoneNumber": "+01-123-456-7890", "author": {"familyName": None}, "tags": ["example"]}
    before = copy.deepcopy((original, patch))
    assert merge_patch(original, patch) == {
        "title": "Hello!",
        "author": {"givenName": "John"},
        "tags": ["example"],
        "content": "This will be unchanged",
        "phoneNumber": "+01-123-456-7890",
    }
    assert (original, patch) == before


def test_patched_validates_the_merged_put_body_and_names_the_field() -> None:
    target = {"pipelineId": "pl-1", "cronExpression": "0 3 * * *", "timezone": "UTC", "enabled": True}
    assert patched(ScheduleIn, target, {"enabled": False}).enabled is False
    with pytest.raises(ValidationFailed) as caught:
        patched(ScheduleIn, target, {"cronExpression": None, "enabled": "maybe"})
    paths = [d["path"] for d in caught.value.details]
    assert paths == ["cronExpression", "enabled"], caught.value.details
    assert caught.value.message.startswith("cronExpression: ")
