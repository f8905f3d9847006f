"""An http source's `path` stays on its connection's host: no `//host` or `scheme://host` (urljoin would go there
with the connection's headers and auth)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dag_factory.spec.models import HttpSource


@pytest.mark.parametrize("path", ["/", "", "/a/b", "a/b/", "/v1/items:batch"])
def test_relative_paths_are_accepted(path: str) -> None:
    assert HttpSource(type="http", connection="api", path=path).path == path


@pytest.mark.parametrize("path", ["//evil.example/x", "http://evil.example/x", "https://evil.example", "/a//b"])
def test_paths_that_name_another_host_are_refused(path: str) -> None:
    with pytest.raises(ValidationError) as err:
        HttpSource(type="http", connection="api", path=path)
    assert err.value.errors()[0]["loc"] == ("path",)
