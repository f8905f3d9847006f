"""Validation of a definition: schema (pydantic) first, then cross-references between its parts."""

from __future__ import annotations

import ast
import difflib
import functools
import importlib.util
import os
import re
from collections.abc import Hashable, Iterator
from typing import Any, TypeVar

from pydantic import ValidationError

from dag_factory.exceptions import DefinitionError
from dag_factory.spec.expectations import known_expectations
from dag_factory.spec.models import (
    DatabaseSource,
    FileSink,
    FileSource,
    Filter,
    HttpSource,
    LookupJoin,
    ParameterSpec,
    PipelineDefinition,
    PostgresSink,
    PostgresSource,
    PythonStep,
    S3Sink,
    S3Source,
    Sink,
    Source,
    SqlSink,
    SqlSource,
    SqlTransform,
    Transformation,
)
from dag_factory.spec.sqlcheck import predicate_errors, select_errors, without_jinja
from dag_factory.spec.templating import template_errors


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


_UNIONS = {
    "sources": {"postgres", "sql", "file", "s3", "http"},
    "sinks": {"postgres", "sql", "file", "s3"},
    "transformations": {
        "sql_transform",
        "lookup_join",
        "filter",
        "aggregate",
        "deduplicate",
        "select_columns",
        "mask",
        "python",
    },
}
# Callables a python step may name: always our own examples, plus the operator's allow-list.
ALLOWED_CALLABLES_ENV = "PIPELINE_PYTHON_CALLABLES"
_BUILTIN_CALLABLES = ("dag_factory.callables.*",)
# Fields of sources, transformations and sinks that the operators render as templates (their template_fields).
TEMPLATED_FIELDS = ("where", "query", "sql", "condition", "path", "glob", "prefix", "params", "options")

STAGING_REQUIRED = "required when every sink writes files or objects: the database where datasets are staged"

Errors = list[dict[str, str]]
Step = Source | Transformation | Sink
StepKey = tuple[str, str]  # ("dataset" | "sink", name)
Node = TypeVar("Node", bound=Hashable)


def allowed_callables() -> list[str]:
    """Exact dotted paths or `package.module.*`, from PIPELINE_PYTHON_CALLABLES (comma-separated)."""
    extra = [e.strip() for e in os.environ.get(ALLOWED_CALLABLES_ENV, "").split(",") if e.strip()]
    return [*_BUILTIN_CALLABLES, *extra]


def callable_allowed(path: str) -> bool:
    """An exact entry of the allow-list, or a public function defined in a `module.*` entry's module itself.

    Not a prefix match: `dag_factory.callables.*` must not let `dag_factory.callables.__builtins__` (or a
    name the module imported, or a submodule) through.
    """
    module, _, name = path.rpartition(".")
    for entry in allowed_callables():
        if path == entry:
            return True
        if entry.endswith(".*") and module == entry[:-2] and not name.startswith("_"):
            return name in public_functions(module)
    return False


@functools.cache
def public_functions(module: str) -> frozenset[str]:
    """Names of the functions a module's source defines at top level, not starting with `_`. Read from the
    source, not imported: the service validates without importing what the workers run (nor Airflow)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return frozenset()
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return frozenset()
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    return frozenset(
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_")
    )


def sql_table_refs(statement: str) -> list[tuple[str | None, str]] | None:
    """(schema, table) of every table a statement reads (CTEs excluded); None when it does not parse.

    Names followed by `(` are table functions (generate_series(...)), not tables.
    """
    import openlineage_sql  # a compiled parser (no Airflow); imported when a definition has SQL

    text = without_jinja(statement)
    result = openlineage_sql.parse([text], dialect="postgres")
    if result.errors:
        return None
    refs = []
    for t in result.in_tables:
        if re.search(rf"\b{re.escape(t.name)}\s*\(", text):
            continue
        quoted = t.quote_style is not None and t.quote_style.name is not None
        refs.append((t.database or t.schema, t.name if quoted else t.name.lower()))
    return refs


def _sql_errors(statement: str, where: str, inputs: list[str], known: set[str]) -> Errors:
    errors = []
    for schema, name in sql_table_refs(statement) or []:
        if schema is not None or name in inputs:
            continue
        if name in known:
            message = f"reads dataset '{name}' which is not in its inputs (add it, so the step waits for it)"
        else:
            message = (
                f"unknown table '{name}': not an earlier dataset ({', '.join(sorted(known)) or 'none'}); "
                "qualify tables of the staging database with their schema (public.{name})".replace("{name}", name)
            )
        errors.append({"path": where, "message": message})
    return errors


def _transformation_errors(d: PipelineDefinition, check_sql: bool) -> Errors:
    errors: Errors = []
    known: set[str] = set(d.sources)
    for i, t in enumerate(d.transformations):
        here = f"transformations[{i}]"
        if t.name in known:
            errors.append({"path": f"{here}.name", "message": f"dataset name '{t.name}' is used twice"})
        for field, name in _named_inputs(t):
            if name not in known:
                errors.append({"path": f"{here}.{field}", "message": _unknown(name, known)})
        if isinstance(t, SqlTransform) and check_sql:
            shape = [{"path": f"{here}.sql", "message": m} for m in select_errors(t.sql)]
            errors += shape or _sql_errors(t.sql, f"{here}.sql", t.inputs, known)
        elif isinstance(t, Filter) and check_sql:
            shape = [{"path": f"{here}.condition", "message": m} for m in predicate_errors(t.condition)]
            statement = f"SELECT 1 FROM {t.input} WHERE ({t.condition}\n)"
            errors += shape or _sql_errors(statement, f"{here}.condition", [t.input], known)
        elif isinstance(t, PythonStep) and not callable_allowed(t.callable):
            message = f"'{t.callable}' is not allow-listed ({ALLOWED_CALLABLES_ENV}: {', '.join(allowed_callables())})"
            errors.append({"path": f"{here}.callable", "message": message})
        known.add(t.name)
    return errors


def _named_inputs(t: Transformation) -> list[tuple[str, str]]:
    """(field, for its JSON path; dataset name) of each input a transformation names, in field order."""
    match t:
        case SqlTransform() | PythonStep():
            return [(f"inputs[{j}]", name) for j, name in enumerate(t.inputs)]
        case LookupJoin():
            return [("input", t.input), ("lookup", t.lookup)]
        case _:
            return [("input", t.input)]


def _source_sql_errors(d: PipelineDefinition) -> Errors:
    """A source's `where` is one predicate (the builder wraps it in parentheses), its `query` one SELECT."""
    errors: Errors = []
    for name, src in d.sources.items():
        if not isinstance(src, DatabaseSource):
            continue
        where, query = src.where, src.query if isinstance(src, SqlSource) else None
        if where is not None and where.strip():
            errors += [{"path": f"sources.{name}.where", "message": m} for m in predicate_errors(where)]
        if query is not None:
            errors += [{"path": f"sources.{name}.query", "message": m} for m in select_errors(query)]
    return errors


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string in a field's value (in nested dicts and lists too: rendered alike), with its JSON path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")


def templated_strings(d: PipelineDefinition) -> Iterator[tuple[str, str]]:
    """(JSON path, text) of every string the workers render as a template (see dag_factory.spec.templating)."""
    for path, step in _steps(d).values():
        for field, value in templated_fields(step):
            if value is not None:
                yield from _strings(value, f"{path}.{field}")


def templated_fields(step: Step) -> list[tuple[str, object]]:
    """(name, value) of the step's fields that the workers render (TEMPLATED_FIELDS), in that order."""
    match step:
        case PostgresSource():
            return [("where", step.where)]
        case SqlSource():
            return [("where", step.where), ("query", step.query)]
        case FileSource():
            return [("path", step.path), ("glob", step.glob)]
        case S3Source():
            return [("glob", step.glob), ("prefix", step.prefix)]
        case HttpSource():
            return [("path", step.path), ("params", step.params)]
        case SqlTransform():
            return [("sql", step.sql)]
        case Filter():
            return [("condition", step.condition)]
        case PythonStep():
            return [("options", step.options)]
        case FileSink():
            return [("path", step.path)]
        case S3Sink():
            return [("prefix", step.prefix)]
        case _:
            return []


def _template_errors(d: PipelineDefinition) -> Errors:
    """User text may only refer to the run's params and time values: never to Airflow's context (another
    tenant's connections, variables and XComs are one `conn.get(...)` away in it)."""
    declared = set(d.parameters)
    return [
        {"path": path, "message": message}
        for path, text in templated_strings(d)
        for message in template_errors(text, declared)
    ]


def _steps(d: PipelineDefinition) -> dict[StepKey, tuple[str, Step]]:
    """Every step of the graph, keyed (kind, name), with its JSON path and model."""
    steps: dict[StepKey, tuple[str, Step]] = {}
    for name, src in d.sources.items():
        steps[("dataset", name)] = (f"sources.{name}", src)
    for i, t in enumerate(d.transformations):
        steps[("dataset", t.name)] = (f"transformations[{i}]", t)
    for name, sink in d.sinks.items():
        steps[("sink", name)] = (f"sinks.{name}", sink)
    return steps


def step_key(d_names: set[str], sink_names: set[str], name: str) -> StepKey | None:
    """A depends_on entry names a dataset (source or transformation) or, failing that, a sink."""
    if name in d_names:
        return ("dataset", name)
    return ("sink", name) if name in sink_names else None


def _dependency_errors(d: PipelineDefinition) -> Errors:
    errors: Errors = []
    steps = _steps(d)
    datasets, sinks = {n for k, n in steps if k == "dataset"}, set(d.sinks)
    graph: dict[StepKey, list[StepKey]] = {}
    for key, (path, step) in steps.items():
        graph[key] = [("dataset", n) for n in step_inputs(step) if n in datasets]
        for j, name in enumerate(step.depends_on):
            dep = step_key(datasets, sinks, name)
            if dep is None:
                known = ", ".join(sorted(datasets | sinks))
                errors.append({"path": f"{path}.depends_on[{j}]", "message": f"unknown step '{name}' (known: {known})"})
            elif dep == key:
                errors.append({"path": f"{path}.depends_on[{j}]", "message": "a step cannot depend on itself"})
            else:
                graph[key].append(dep)
    if not errors:
        cycle = find_cycle(graph)
        if cycle:
            names = " -> ".join(n for _, n in cycle)
            errors.append({"path": f"{steps[cycle[0]][0]}.depends_on", "message": f"dependency cycle: {names}"})
    return errors


def step_inputs(step: Step) -> list[str]:
    """The datasets a step reads (a source reads none)."""
    match step:
        case PostgresSource() | SqlSource() | FileSource() | S3Source() | HttpSource():
            return []
        case PostgresSink() | SqlSink() | FileSink() | S3Sink():
            return [step.input]
        case _:
            return step.input_names()


def find_cycle(graph: dict[Node, list[Node]]) -> list[Node] | None:
    """One cycle of a directed graph as [a, b, ..., a], or None (iterative DFS: definitions can be long)."""
    state: dict[Node, int] = {}  # 1: on the current path, 2: done
    for root in graph:
        if root in state:
            continue
        path, stack = [root], [iter(graph.get(root, []))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(graph.get(nxt, [])))
    return None


def _reference_errors(d: PipelineDefinition, check_sql: bool) -> Errors:
    errors = _template_errors(d) + _source_sql_errors(d) if check_sql else []
    errors += _transformation_errors(d, check_sql)
    staging = d.staging_connection()
    errors += _object_io_errors(d, staging)
    errors += _extraction_errors(d)
    for name, src in d.sources.items():
        if isinstance(src, PostgresSource) and src.materialize == "view" and src.connection != staging:
            message = f"a view needs the source on the staging connection '{staging}' (here: '{src.connection}')"
            errors.append({"path": f"sources.{name}.materialize", "message": message})
    known = set(d.sources) | {t.name for t in d.transformations}
    for name, sink in d.sinks.items():
        if sink.input not in known:
            errors.append({"path": f"sinks.{name}.input", "message": _unknown(sink.input, known)})
    errors += _dependency_errors(d)
    errors += _approval_errors(d)
    expectations = known_expectations()
    for i, check in enumerate(d.quality_checks):
        if check.dataset not in d.sinks and check.dataset not in known:
            message = _unknown(check.dataset, known | set(d.sinks), "dataset or sink")
            errors.append({"path": f"quality_checks[{i}].dataset", "message": message})
        if check.expectation not in expectations:
            close = difflib.get_close_matches(check.expectation, expectations, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            message = f"unknown great-expectations expectation '{check.expectation}'{hint}"
            errors.append({"path": f"quality_checks[{i}].expectation", "message": message})
    for pname, p in d.parameters.items():
        if p.default is not None:
            errors += [{"path": f"parameters.{pname}.default", "message": m} for m in param_errors(p, p.default)]
    return errors


def _approval_errors(d: PipelineDefinition) -> Errors:
    """Gates hold back sinks or transformations (a source reads nothing to approve); names are unique."""
    errors: Errors = []
    targets = set(d.sinks) | {t.name for t in d.transformations}
    seen: set[str] = set()
    for i, gate in enumerate(d.approvals):
        if gate.name in seen:
            errors.append({"path": f"approvals[{i}].name", "message": f"duplicate gate name '{gate.name}'"})
        seen.add(gate.name)
        for j, name in enumerate(gate.before):
            if name not in targets:
                message = _unknown(name, targets, "sink or transformation")
                errors.append({"path": f"approvals[{i}].before[{j}]", "message": message})
    return errors


def _extraction_errors(d: PipelineDefinition) -> Errors:
    """Incremental and partitioned sources (postgres, sql): what the models alone cannot see."""
    errors: Errors = []
    for name, src in d.sources.items():
        if not isinstance(src, DatabaseSource):
            continue
        here = f"sources.{name}"
        view = isinstance(src, PostgresSource) and src.materialize == "view"
        if (src.incremental or src.partitions) and view:
            # A view is evaluated later, by its readers: what it returns is not what the mark was computed from.
            message = "incremental or partitioned sources are staged as tables: remove materialize 'view'"
            errors.append({"path": f"{here}.materialize", "message": message})
        if src.partitions and src.partition_column() is None and src.table is None:
            message = "required for a query source (or set incremental.column): a query has no primary key"
            errors.append({"path": f"{here}.partitions.column", "message": message})
    return errors


def _object_io_errors(d: PipelineDefinition, staging: str | None) -> Errors:
    """File/s3 sinks only: no database of their own to stage in."""
    errors: Errors = []
    if staging is None:
        errors.append({"path": "orchestration.staging_connection", "message": STAGING_REQUIRED})
    return errors


def _unknown(name: str, known: set[str], what: str = "dataset") -> str:
    options = ", ".join(sorted(known)) or "none"
    return f"unknown {what} '{name}' (known: {options})"


def param_errors(spec: ParameterSpec, value: Any) -> list[str]:
    """Messages for a value that does not satisfy a parameter's JSON Schema (empty when it does)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(spec.json_schema(), format_checker=jsonschema.FormatChecker())
    control = _control_character(value)
    return [e.message for e in validator.iter_errors(value)] + (
        [f"contains the control character U+{ord(control):04X}"] if control else []
    )


def _control_character(value: Any) -> str | None:
    """The first control character (other than tab, newline, carriage return) in any string of `value`: NUL
    cannot be stored (PostgreSQL) nor reach SQL, the others are never meant."""
    if isinstance(value, str):
        return next((c for c in value if (ord(c) < 32 and c not in "\t\n\r") or ord(c) == 127), None)
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, item in items:
        found = _control_character(key) if isinstance(key, str) else None
        found = found or _control_character(item)
        if found:
            return found
    return None


def validate_definition(data: Any, *, check_sql: bool = True) -> PipelineDefinition:
    """Parse and check a definition; raise DefinitionError naming every bad JSON path.

    check_sql=False skips parsing the SQL (its shape and table references) and the templates: the DAG builder
    does, because the service checked them when it accepted the definition, and the DAG files are parsed far
    more often (what a template may reach is also enforced where it is rendered, dag_factory.spec.templating).
    """
    try:
        definition = PipelineDefinition.model_validate(data)
    except ValidationError as exc:
        raise DefinitionError(_pydantic_errors(exc)) from None
    errors = _reference_errors(definition, check_sql)
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
