"""Templates: the document model, the shipped catalogue (templates/industries/<industry>/<name>.json) and
rendering (parameters substituted, customizations applied, compliance controls added last).

A template is data only. Its `definition` is a pipeline definition whose strings may hold `${PARAM}`
placeholders: a string that is exactly one placeholder takes the parameter's typed value (so
`"retries": "${RETRIES}"` becomes an integer); elsewhere the value is interpolated as text.
`{{ params.x }}` (run-time Jinja, dag_factory.spec.templating) is left alone: the rendered definition is
validated like any other, its templates included.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import re2
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from connections.types import PlainStr
from dag_factory.exceptions import DefinitionError
from dag_factory.spec import json_path, validate_definition
from service.schemas import Prose

REPO_ROOT = Path(__file__).resolve().parents[2]
# The catalogue's folder; overridable so a deployment (or a test) can ship another catalogue.
TEMPLATES_DIR_ENV = "PIPELINE_TEMPLATES_DIR"
SEMVER = r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$"
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
COMPLIANCE_TAGS = ("PCI-DSS", "HIPAA", "GDPR", "SOX")
MAX_PATTERN_LENGTH = 500
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is the client's 400, not a line on the server's stderr
_RE2_OPTIONS.max_mem = 1 << 20  # bounds the compiled program too: a pattern like (a{1000}){1000} is refused
ColumnName = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_$]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TemplateParameter(_Strict):
    """One template parameter, as a small JSON Schema."""

    type: Literal["string", "integer", "number", "boolean"] = "string"
    required: bool = False
    default: Any = None
    description: Prose = Field(min_length=1, max_length=1000)
    enum: list[Any] | None = Field(default=None, max_length=1000)
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = Field(default=None, max_length=MAX_PATTERN_LENGTH)

    @field_validator("pattern")
    @classmethod
    def _linear_time(cls, pattern: str | None) -> str | None:
        """Tenants write these patterns: matched with a backtracking engine, `^(a+)+$` takes one request for
        seconds (ReDoS). RE2 matches in linear time; what it cannot compile (backreferences, lookaround)
        is refused."""
        if pattern is not None:
            compile_pattern(pattern)
        return pattern

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of a value, without `pattern`: that is matched by RE2 (`pattern_problems`)."""
        schema: dict[str, Any] = {"type": self.type}
        for key in ("enum", "minimum", "maximum"):
            value = getattr(self, key)
            if value is not None:
                schema[key] = value
        return schema

    def pattern_problems(self, value: Any) -> list[str]:
        """JSON Schema's `pattern` semantics (a search, not anchored), in linear time."""
        if self.pattern is None or not isinstance(value, str) or compile_pattern(self.pattern).search(value):
            return []
        return [f"{value[:100]!r} does not match {self.pattern!r}"]


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Any:
    """`pattern` compiled by RE2; ValueError (a pydantic error where raised in a validator) otherwise."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"pattern is not supported by the linear-time regex engine (RE2): {reason}") from None


class SensitiveColumn(_Strict):
    """A column the compliance packs mask. `sinks`: sinks that carry it, where a leak check is added."""

    category: Literal["pan", "phi", "pii"]
    strategy: Literal["hash", "last4", "redact", "null"] | None = None
    sinks: list[str] = Field(default_factory=list)


class DataSubject(_Strict):
    """GDPR: the column identifying a person (erasure) and the timestamp that ages a row (retention)."""

    column: str = ColumnName
    timestamp: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_$]*$")


class Template(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}/[a-z0-9][a-z0-9_]{0,79}$")
    name: PlainStr = Field(min_length=1, max_length=200)
    industry: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    version: str = Field(pattern=SEMVER)
    description: Prose = Field(min_length=1, max_length=4000)
    compliance: list[Literal["PCI-DSS", "HIPAA", "GDPR", "SOX"]] = Field(default_factory=list)
    tags: list[Annotated[PlainStr, Field(max_length=50)]] = Field(default_factory=list, max_length=20)
    sensitive: dict[str, SensitiveColumn | Literal["pan", "phi", "pii"]] = Field(default_factory=dict)
    data_subject: DataSubject | None = Field(default=None, alias="dataSubject")
    parameters: dict[str, TemplateParameter] = Field(default_factory=dict)
    definition: dict[str, Any]

    @model_validator(mode="after")
    def _consistent(self) -> Template:
        from service.templates.compliance import CATEGORY_PACK

        for name in self.parameters:
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
                raise ValueError(f"parameter '{name}' must be upper case (A-Z, 0-9, _)")
        used = set(PLACEHOLDER.findall(json.dumps(self.definition)))
        unknown = used - set(self.parameters)
        if unknown:
            raise ValueError(f"definition uses undeclared parameters: {', '.join(sorted(unknown))}")
        for column, item in self.sensitive_columns().items():
            pack = CATEGORY_PACK[item.category]
            if pack not in self.compliance:
                raise ValueError(f"sensitive column '{column}' is {item.category}: the template needs '{pack}'")
        if "GDPR" in self.compliance and self.data_subject is None:
            raise ValueError("a GDPR template declares its dataSubject (column, timestamp)")
        return self

    def sensitive_columns(self) -> dict[str, SensitiveColumn]:
        return {c: SensitiveColumn(category=v) if isinstance(v, str) else v for c, v in self.sensitive.items()}

    def all_parameters(self) -> dict[str, TemplateParameter]:
        """The template's parameters and those its compliance packs add (e.g. RETENTION_DAYS)."""
        from service.templates.compliance import pack_parameters

        return {**pack_parameters(self), **self.parameters}

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "industry": self.industry,
            "version": self.version,
            "description": self.description,
            "compliance": list(self.compliance),
            "tags": list(self.tags),
            "parameters": [
                {"name": n, **p.model_dump(exclude_none=True)} for n, p in sorted(self.all_parameters().items())
            ],
        }


class TemplateError(Exception):
    """Bad input to a render: `errors` are {path, message} with paths such as `parameters.X`."""

    def __init__(self, errors: list[dict[str, str]]):
        super().__init__(errors[0]["message"] if errors else "invalid")
        self.errors = errors


def templates_dir() -> Path:
    return Path(os.environ.get(TEMPLATES_DIR_ENV) or REPO_ROOT / "templates" / "industries")


@functools.cache
def _load(folder: str) -> dict[str, Template]:
    found: dict[str, Template] = {}
    for path in sorted(Path(folder).glob("*/*.json")):
        template = Template.model_validate(json.loads(path.read_text()))
        expected = f"{path.parent.name}/{path.stem}"
        if template.id != expected or template.industry != path.parent.name:
            raise ValueError(f"{path}: id must be '{expected}' and industry '{path.parent.name}'")
        found[template.id] = template
    return found


def shipped() -> dict[str, Template]:
    """The shipped catalogue by id (read once per folder; a bad file fails loudly: tests validate them)."""
    return _load(str(templates_dir()))


def reload() -> None:
    _load.cache_clear()


def parse(data: Any) -> Template:
    """A tenant-submitted template document; 400-style errors with paths."""
    try:
        return Template.model_validate(data)
    except ValidationError as exc:
        raise TemplateError(
            [{"path": json_path(e["loc"]) or "template", "message": e["msg"]} for e in exc.errors(include_url=False)]
        ) from None


# ---------------------------------------------------------------------------------------------- rendering


def resolve_parameters(template: Template, values: dict[str, Any]) -> dict[str, Any]:
    """Values checked against the parameters' schemas and merged over the defaults; errors name each one."""
    import jsonschema

    declared = template.all_parameters()
    errors = []
    for name in values:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            errors.append({"path": f"parameters.{name}", "message": f"unknown parameter '{name}' (known: {known})"})
    merged: dict[str, Any] = {}
    for name, spec in declared.items():
        if name in values:
            value = values[name]
            validator = jsonschema.Draft202012Validator(spec.json_schema())
            problems = [e.message for e in validator.iter_errors(value)] + spec.pattern_problems(value)
            if isinstance(value, bool) and spec.type in ("integer", "number"):
                problems.append(f"{value!r} is not of type '{spec.type}'")
            errors += [{"path": f"parameters.{name}", "message": m} for m in problems]
            merged[name] = value
        elif spec.default is not None:
            merged[name] = spec.default
        elif spec.required:
            errors.append({"path": f"parameters.{name}", "message": f"required parameter '{name}' is missing"})
    if errors:
        raise TemplateError(errors)
    return merged


def stand_in_values(template: Template) -> dict[str, Any]:
    """Values for the required parameters without a default, so that a template can be checked on upload:
    `x` is a valid name, table and connection alike."""
    stand_in = {"string": "x", "integer": 1, "number": 1, "boolean": True}
    values = {}
    for name, spec in template.all_parameters().items():
        if spec.default is None and spec.required:
            values[name] = spec.enum[0] if spec.enum else stand_in[spec.type]
            if spec.minimum is not None and spec.type in ("integer", "number"):
                values[name] = int(spec.minimum) if spec.type == "integer" else spec.minimum
    return values


def substitute(value: Any, params: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: substitute(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, params) for v in value]
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value)
        if whole:
            return params.get(whole.group(1))
        return PLACEHOLDER.sub(lambda m: "" if params.get(m.group(1)) is None else str(params[m.group(1)]), value)
    return value


def _step(container: Any, part: str) -> tuple[Any, Any] | None:
    """(key, child) of one path segment: dict keys; list items by index or by their `name`."""
    if isinstance(container, dict):
        return (part, container.get(part)) if part in container else None
    if isinstance(container, list):
        if part.isdigit() and int(part) < len(container):
            return int(part), container[int(part)]
        for i, item in enumerate(container):
            if isinstance(item, dict) and item.get("name") == part:
                return i, item
    return None


def customize(definition: dict[str, Any], customizations: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Applies {dotted path: value}; returns the definition and each customization's JSON path (for errors).

    Every segment but the last must exist; the last may be a new key of an existing object (the definition's
    schema then decides whether that key exists in the language: `orchestration.retries` does, `x.y` not).
    """
    result = copy.deepcopy(definition)
    paths: dict[str, str] = {}
    errors = []
    for dotted, value in customizations.items():
        parts = dotted.split(".")
        node: Any = result
        loc: list[Any] = []
        for part in parts[:-1]:
            found = _step(node, part)
            if found is None or not isinstance(found[1], dict | list):
                node = None
                break
            loc.append(found[0])
            node = found[1]
        last = parts[-1]
        if node is None or not last or (isinstance(node, list) and _step(node, last) is None):
            errors.append({"path": f"customizations.{dotted}", "message": f"unknown path '{dotted}' in the definition"})
            continue
        key = _step(node, last)[0] if isinstance(node, list) else last  # type: ignore[index]
        node[key] = copy.deepcopy(value)
        paths[json_path([*loc, key])] = dotted
    if errors:
        raise TemplateError(errors)
    return result, paths


def render(
    template: Template,
    values: dict[str, Any] | None = None,
    customizations: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(definition, resolved parameters): substituted, customized, compliance controls added, validated.

    Structural validation (schema and references) happens here so that an unknown customization path is
    reported as such; the connections are checked by the pipelines service on create.
    """
    from service.templates.compliance import apply_packs

    params = resolve_parameters(template, values or {})
    definition, paths = customize(substitute(template.definition, params), customizations or {})
    definition = apply_packs(template, definition, params)
    try:
        validate_definition(definition)
    except DefinitionError as exc:
        errors = []
        for e in exc.errors:
            mapped = next((d for p, d in paths.items() if e["path"] == p or e["path"].startswith(p + ".")), None)
            if mapped is not None:
                message = (
                    f"unknown path '{mapped}' in the definition" if "Extra inputs" in e["message"] else e["message"]
                )
                errors.append({"path": f"customizations.{mapped}", "message": message})
            else:
                errors.append({"path": f"definition.{e['path']}", "message": e["message"]})
        raise TemplateError(errors) from None
    return definition, params
