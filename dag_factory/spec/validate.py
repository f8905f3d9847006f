"""Validation of a definition: schema (pydantic) first, then cross-references between its parts."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from dag_factory.exceptions import DefinitionError
from dag_factory.spec.models import LookupJoin, PipelineDefinition


def json_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """('sources', 'x', 'table') -> 'sources.x.table'; list indexes become [i]."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _pydantic_errors(exc: ValidationError) -> list[dict[str, str]]:
    errors = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        # A discriminated union adds its tag after the item's key or index ("sources", "x", "postgres", ...).
        if len(loc) > 2 and loc[0] in _UNIONS and loc[2] in _UNIONS[loc[0]]:
            del loc[2]
        errors.append({"path": json_path(loc), "message": err["msg"]})
    return errors


_UNIONS = {"sources": {"postgres"}, "sinks": {"postgres"}, "transformations": {"sql_transform", "lookup_join"}}


def _reference_errors(d: PipelineDefinition) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    known: set[str] = set(d.sources)
    for i, t in enumerate(d.transformations):
        if t.name in known:
            errors.append({"path": f"transformations[{i}].name", "message": f"dataset name '{t.name}' is used twice"})
        fields = ["input", "lookup"] if isinstance(t, LookupJoin) else ["inputs"]
        for field in fields:
            values = getattr(t, field)
            for j, name in enumerate(values if isinstance(values, list) else [values]):
                if name not in known:
                    where = f"transformations[{i}].{field}" + (f"[{j}]" if isinstance(values, list) else "")
                    errors.append({"path": where, "message": _unknown(name, known)})
        known.add(t.name)
    for name, sink in d.sinks.items():
        if sink.input not in known:
            errors.append({"path": f"sinks.{name}.input", "message": _unknown(sink.input, known)})
    for i, check in enumerate(d.quality_checks):
        if check.dataset not in d.sinks:
            errors.append(
                {"path": f"quality_checks[{i}].dataset", "message": _unknown(check.dataset, set(d.sinks), "sink")}
            )
    for pname, p in d.parameters.items():
        if p.default is not None:
            errors += [{"path": f"parameters.{pname}.default", "message": m} for m in param_errors(p, p.default)]
    return errors


def _unknown(name: str, known: set[str], what: str = "dataset") -> str:
    options = ", ".join(sorted(known)) or "none"
    return f"unknown {what} '{name}' (known: {options})"


def param_errors(spec: Any, value: Any) -> list[str]:
    """Messages for a value that does not satisfy a parameter's JSON Schema (empty when it does)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(spec.json_schema(), format_checker=jsonschema.FormatChecker())
    return [e.message for e in validator.iter_errors(value)]


def validate_definition(data: Any) -> PipelineDefinition:
    """Parse and check a definition; raise DefinitionError naming every bad JSON path."""
    try:
        definition = PipelineDefinition.model_validate(data)
    except ValidationError as exc:
        raise DefinitionError(_pydantic_errors(exc)) from None
    errors = _reference_errors(definition)
    if errors:
        raise DefinitionError(errors)
    return definition


def validate_parameters(definition: PipelineDefinition, values: dict[str, Any]) -> dict[str, Any]:
    """Check run parameters against the declared ones; return them merged over the defaults."""
    errors = []
    for name in values:
        if name not in definition.parameters:
            errors.append(
                {"path": f"parameters.{name}", "message": _unknown(name, set(definition.parameters), "parameter")}
            )
    merged = {n: p.default for n, p in definition.parameters.items() if p.default is not None}
    merged.update(values)
    for name, spec in definition.parameters.items():
        if name not in merged:
            if spec.required:
                errors.append({"path": f"parameters.{name}", "message": "required parameter is missing"})
            continue
        if name in values:
            errors += [{"path": f"parameters.{name}", "message": m} for m in param_errors(spec, values[name])]
    if errors:
        raise DefinitionError(errors)
    return merged
