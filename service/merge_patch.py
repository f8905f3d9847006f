"""JSON Merge Patch (RFC 7396) for the PATCH endpoints: the patch is merged into the resource's PUT body (what
a client would PUT), and the merged document is validated and stored by the PUT path itself, so a PATCH can
never accept what a PUT would refuse."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Body
from pydantic import BaseModel, ValidationError

from service.errors import ValidationFailed, validation_details

MERGE_PATCH = "application/merge-patch+json"
M = TypeVar("M", bound=BaseModel)

# A PATCH body: any JSON object (a body that is not one is a 400 naming `body`), sent as merge-patch or plain JSON.
_DESCRIPTION = "RFC 7396: objects merge recursively, `null` removes a key, arrays and scalars replace"
MergePatch = Annotated[dict[str, Any], Body(media_type=MERGE_PATCH, description=_DESCRIPTION)]
_OBJECT = {"type": "object", "additionalProperties": True, "description": _DESCRIPTION}
# What FastAPI cannot say with one media type: plain JSON is accepted too (both parse to the same object).
PATCH_OPENAPI: dict[str, Any] = {"requestBody": {"content": {"application/json": {"schema": _OBJECT}}}}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 section 2, MergePatch(Target, Patch); neither argument is modified."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = merge_patch(merged.get(name), value)
    return merged


def patched(model: type[M], target: dict[str, Any], patch: dict[str, Any]) -> M:
    """The PUT body `model` of `target` merged with `patch`; 400 naming the field, as PUT's request validation."""
    try:
        return model.model_validate(merge_patch(target, patch))
    except ValidationError as exc:
        details = validation_details(exc.errors())
        raise ValidationFailed(f"{details[0]['path'] or 'body'}: {details[0]['message']}", details=details) from None
