"""What a template in a definition may contain, and the one Jinja environment that renders it.

User text (sql, where, query, paths, http query values, python options) is rendered on an Airflow worker
that every tenant shares. Airflow's own template context carries `conn`, `var`, `ti`, `macros`, `dag`...:
through them one tenant could read another's connections or XComs. So user text never sees that context.
It is rendered here, with a sandbox whose context holds only

- `params`: the run's parameter values, as a plain dict (data: a value is never rendered again);
- the run's time values `ds`, `ds_nodash`, `ts`, `ts_nodash`, `logical_date`, `data_interval_start`,
  `data_interval_end` and its `run_id` and `dag_id`, all as plain strings (a datetime is passed as the text
  Airflow would have rendered for it, so no object is in reach to walk attributes of);

and a handful of filters. Attribute access is refused altogether (`params.x` is a key lookup on the dict),
and so is every call. Validation (`template_errors`) refuses at once, naming the field, anything else.

Shared by dag_factory.spec.validate (the service) and dag_factory.operators (the workers): no Airflow here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# The run's time values and identity, present when the run has them (a manual run has no logical date).
TIME_NAMES = (
    "ds",
    "ds_nodash",
    "ts",
    "ts_nodash",
    "logical_date",
    "data_interval_start",
    "data_interval_end",
)
RUN_NAMES = ("run_id", "dag_id")
ALLOWED_NAMES = ("params", *TIME_NAMES, *RUN_NAMES)
# Filters that only transform the value they are given; their arguments must be literals.
ALLOWED_FILTERS = (
    "default",
    "lower",
    "upper",
    "trim",
    "replace",
    "int",
    "float",
    "string",
    "round",
    "abs",
    "length",
    "join",
)


class RestrictedEnvironment(ImmutableSandboxedEnvironment):
    """A sandbox stricter than Jinja's: no globals, only ALLOWED_FILTERS, no attribute access (a mapping's
    keys only, so `params.x` works), no calls. Validation already refuses all that; this is the guard for
    what validation did not see (a definition stored before it, a DAG file edited by hand)."""

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, cache_size=0)
        self.globals.clear()
        self.filters = {name: self.filters[name] for name in ALLOWED_FILTERS}

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping) and not attribute.startswith("_"):
            return obj[attribute] if attribute in obj else self.undefined(obj=obj, name=attribute)
        return self.unsafe_undefined(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, Mapping) and isinstance(argument, str):
            return obj[argument] if argument in obj else self.undefined(obj=obj, name=argument)
        if isinstance(obj, list | tuple) and isinstance(argument, int):
            return obj[argument]
        return self.unsafe_undefined(obj, str(argument))

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        raise SecurityError("calls are not allowed in a pipeline template")


ENVIRONMENT = RestrictedEnvironment()


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """`value` with every string in it rendered (in dicts, lists and tuples too, as Airflow renders nested
    template fields); dict keys and other values stay as they are. `context` comes from template_context."""
    if isinstance(value, str):
        return ENVIRONMENT.from_string(value).render(context) if _has_jinja(value) else value
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    if isinstance(value, tuple):
        return tuple(render(v, context) for v in value)
    return value


def template_context(params: Mapping[str, Any], run_values: Mapping[str, Any]) -> dict[str, Any]:
    """The whole context a template is rendered with: params as a plain dict, time and run values as text.
    A missing or None time value is left out: `{{ ds }}` of a manual run fails as it does in Airflow."""
    context: dict[str, Any] = {"params": {str(k): params[k] for k in params}}
    for name in (*TIME_NAMES, *RUN_NAMES):
        value = run_values.get(name)
        if value is not None:
            context[name] = value if isinstance(value, str) else str(value)
    return context


def _has_jinja(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


# -- validation ------------------------------------------------------------------------------------------


def template_errors(text: str, declared: Mapping[str, Any] | set[str]) -> list[str]:
    """Why `text` may not be a template of a definition with parameters `declared` (empty: it may)."""
    if not _has_jinja(text):
        return []
    try:
        template = ENVIRONMENT.parse(text)
    except TemplateSyntaxError as exc:
        return [f"not a valid template: {exc.message} (line {exc.lineno})"]
    errors: list[str] = []
    for node in template.body:
        if not isinstance(node, nodes.Output):
            kind = {"Assign": "set", "AssignBlock": "set", "CallBlock": "call", "FilterBlock": "filter"}.get(
                type(node).__name__, type(node).__name__.lower()
            )
            errors.append(f"'{{% {kind} %}}' statements are not allowed: only {{{{ ... }}}} expressions")
            continue
        for child in node.nodes:
            if not isinstance(child, nodes.TemplateData):
                errors += _expression_errors(child, set(declared))
    return list(dict.fromkeys(errors))


def _expression_errors(node: nodes.Node, declared: set[str]) -> list[str]:
    """An expression may be a literal, an allowed name, params.<declared> / params['<declared>'], or one of
    those through allowed filters with literal arguments. Names are reported first: the clearest message."""
    unknown = sorted({n.name for n in _names(node)} - set(ALLOWED_NAMES))
    if unknown:
        allowed = ", ".join("params.<name>" if n == "params" else n for n in ALLOWED_NAMES)
        return [f"'{u}' is not available in a template (allowed: {allowed})" for u in unknown]
    while isinstance(node, nodes.Filter):
        problem = _filter_error(node)
        if problem:
            return [problem]
        node = node.node  # type: ignore[assignment]
    if isinstance(node, nodes.Const):
        return []
    if isinstance(node, nodes.Name):
        return [] if node.name != "params" else ["use params.<name>, not params itself"]
    return _param_reference_errors(node, declared)


def _param_reference_errors(node: nodes.Node, declared: set[str]) -> list[str]:
    """params.<name> or params['<name>'], of a declared parameter; nothing deeper."""
    name: Any = None
    if isinstance(node, nodes.Getattr) and not node.attr.startswith("_"):
        target, name = node.node, node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        target, name = node.node, node.arg.value
    else:
        return [f"{_describe(node)} is not allowed in a template: only names, params.<name> and filters"]
    if not (isinstance(target, nodes.Name) and target.name == "params"):
        return ["attribute or item access is only allowed as params.<name>"]
    if name not in declared:
        known = ", ".join(sorted(declared)) or "none"
        return [f"unknown parameter '{name}' (declared: {known})"]
    return []


def _filter_error(node: nodes.Filter) -> str | None:
    if node.name not in ALLOWED_FILTERS:
        return f"filter '{node.name}' is not allowed (allowed: {', '.join(ALLOWED_FILTERS)})"
    values = [*node.args, *(k.value for k in node.kwargs)]
    if node.dyn_args is not None or node.dyn_kwargs is not None or not all(isinstance(v, nodes.Const) for v in values):
        return f"the arguments of filter '{node.name}' must be literals"
    return None


def _names(node: nodes.Node) -> Iterator[nodes.Name]:
    if isinstance(node, nodes.Name):
        yield node
    yield from node.find_all(nodes.Name)


def _describe(node: nodes.Node) -> str:
    kinds: dict[type[nodes.Node], str] = {
        nodes.Call: "a call",
        nodes.Getattr: "attribute access",
        nodes.Getitem: "item access",
        nodes.Concat: "'~' (concatenation)",
        nodes.CondExpr: "an inline if",
    }
    return kinds.get(type(node), f"'{type(node).__name__}'")
