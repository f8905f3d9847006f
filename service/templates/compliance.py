"""Compliance packs: controls that every pipeline created from a template carries, whatever its customizations.

Each compliance tag of a template (`"compliance": ["PCI-DSS", "SOX"]`) names a pack below. Packs are data
(`PACKS`); `apply_packs` adds their steps to the rendered definition *after* the customizations, so a
customization can neither remove nor bypass them (a sink's input is re-pointed to the masked dataset even if
a customization pointed it elsewhere). What is sensitive is declared by the template:
`"sensitive": {"card_number": {"category": "pan", "sinks": ["payments"]}, "email": "pii"}` (the short form
names only the category; `sinks` lists the sinks that carry the column, where a leak check is added).

- **PCI-DSS** — card numbers (`pan`) are masked before every sink (default `last4`: `************1111`;
  `hash`, `redact`, `null` allowed) and each listed sink gets an `error` check that no value looks like a full
  PAN (`expect_column_values_to_not_match_regex` `^[0-9 -]{13,23}$`) plus one that the value is masked.
- **HIPAA** — protected health information (`phi`: SSN, MRN, names, birth dates …) is masked before every
  sink (default `hash`: sha256 hex, so records stay joinable; `redact`, `null` allowed), checked per sink.
- **GDPR** — personal data (`pii`) is pseudonymised (default `hash`) before every sink; the template's
  `dataSubject` {column, timestamp} drives two more controls before every sink: *erasure* — rows whose subject
  is listed in the erasure table (`ERASURE_TABLE`, column `subject_id` text, on `ERASURE_CONNECTION`) are
  never loaded (the hook to honour a right-to-erasure request: insert the subject id there; `overwrite`
  sinks drop it at the next run, `merge`/`append` sinks need a one-off `DELETE … WHERE <column> = …`); and
  *retention* — rows whose timestamp is older than `RETENTION_DAYS` are never loaded.
- **SOX** — an audit record per run: a row per sink (run id, DAG id, template id and version, sink, target
  table, rows loaded, time) appended to `AUDIT_TABLE` on the first sink's connection after every sink has
  loaded (no great-expectations check on it: every value is generated, and a check task costs seconds).

A masked column must be text for `hash`, `last4` and `redact` (`null` suits any type); a column the data does
not have is left alone, so the masks apply "wherever the column appears".
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.templates.catalog import Template, TemplateParameter

# The pack that owns each sensitive-data category.
CATEGORY_PACK = {"pan": "PCI-DSS", "phi": "HIPAA", "pii": "GDPR"}

PACKS: dict[str, dict[str, Any]] = {
    "PCI-DSS": {
        "title": "Payment Card Industry Data Security Standard",
        "masks": {"pan": {"default": "last4", "allowed": ["last4", "hash", "redact", "null"]}},
        "leak_checks": [
            {
                "name": "pci_no_pan",
                "expectation": "expect_column_values_to_not_match_regex",
                "kwargs": {"regex": "^[0-9 -]{13,23}$"},
            }
        ],
    },
    "HIPAA": {
        "title": "Health Insurance Portability and Accountability Act",
        "masks": {"phi": {"default": "hash", "allowed": ["hash", "redact", "null"]}},
        "leak_checks": [],
    },
    "GDPR": {
        "title": "General Data Protection Regulation",
        "masks": {"pii": {"default": "hash", "allowed": ["hash", "redact", "null", "last4"]}},
        "leak_checks": [],
        "parameters": {
            "RETENTION_DAYS": {
                "type": "integer",
                "default": 730,
                "minimum": 1,
                "description": "GDPR retention: rows older than this many days are never loaded",
            },
            "ERASURE_CONNECTION": {
                "type": "string",
                "default": "source-db",
                "description": "GDPR erasure: connection holding the erasure table",
            },
            "ERASURE_TABLE": {
                "type": "string",
                "default": "gdpr.erasure_requests",
                "description": "GDPR erasure: table of erased subjects (column subject_id text)",
            },
        },
    },
    "SOX": {
        "title": "Sarbanes-Oxley Act",
        "masks": {},
        "leak_checks": [],
        "parameters": {
            "AUDIT_TABLE": {
                "type": "string",
                "default": "audit.{template}_runs",
                "description": "SOX audit: table receiving one row per sink and run (on the first sink's connection)",
            }
        },
    },
}

# A masked value looks like this; the check is added wherever a sink is declared to carry the column.
MASKED_CHECK = {
    "hash": ("expect_column_values_to_match_regex", {"regex": "^[0-9a-f]{64}$"}),
    "last4": ("expect_column_values_to_match_regex", {"regex": "^[*]+[0-9A-Za-z]{0,4}$"}),
    "redact": ("expect_column_values_to_match_regex", {"regex": "^\\[REDACTED\\]$"}),
    "null": ("expect_column_values_to_be_null", {}),
}
ERASURE_SOURCE = "gdpr_erasure_requests"
AUDIT_SINK = "sox_audit"


def pack_parameters(template: Template) -> dict[str, TemplateParameter]:
    from service.templates.catalog import TemplateParameter

    short = template.id.split("/", 1)[1]
    found = {}
    for tag in template.compliance:
        for name, spec in PACKS[tag].get("parameters", {}).items():
            spec = dict(spec)
            if isinstance(spec.get("default"), str):
                spec["default"] = spec["default"].replace("{template}", short)
            found[name] = TemplateParameter(**spec)
    return found


def masks_for(template: Template) -> dict[str, str]:
    """column -> strategy of every sensitive column whose pack the template carries."""
    masks: dict[str, str] = {}
    for column, item in template.sensitive_columns().items():
        pack = CATEGORY_PACK[item.category]
        if pack not in template.compliance:
            continue
        rule = PACKS[pack]["masks"][item.category]
        chosen = item.strategy
        masks[column] = chosen if chosen is not None and chosen in rule["allowed"] else rule["default"]
    return masks


def _free_name(wanted: str, taken: set[str]) -> str:
    name, i = wanted[:60], 2
    while name in taken:
        name, i = f"{wanted[:56]}_{i}", i + 1
    taken.add(name)
    return name


def _gdpr_sql(template: Template, input_name: str, retention_days: int) -> str:
    subject = template.data_subject
    assert subject is not None
    row = "to_jsonb(x)"
    erased = f"NOT EXISTS (SELECT 1 FROM {ERASURE_SOURCE} AS e WHERE e.subject_id::text = {row} ->> '{subject.column}')"
    if subject.timestamp is None:
        return f"SELECT x.* FROM {input_name} AS x WHERE {erased}"
    ts = f"({row} ->> '{subject.timestamp}')"
    kept = f"({ts} IS NULL OR {ts}::timestamptz >= now() - make_interval(days => {int(retention_days)}))"
    return f"SELECT x.* FROM {input_name} AS x WHERE {erased} AND {kept}"


def _audit_sql(template: Template, sinks: dict[str, Any]) -> str:
    parts = []
    for name, sink in sinks.items():
        parts.append(
            "SELECT '{{ run_id }}'::text AS run_id, '{{ dag_id }}'::text AS dag_id, "
            f"'{template.id}'::text AS template_id, '{template.version}'::text AS template_version, "
            f"'{name}'::text AS sink, '{sink['table']}'::text AS target_table, "
            f"count(*)::bigint AS row_count, now() AS recorded_at FROM {sink['input']}"
        )
    return " UNION ALL ".join(parts)


def apply_packs(template: Template, definition: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The definition with every control of the template's packs added (a new dict)."""
    d = copy.deepcopy(definition)
    if not template.compliance or not isinstance(d.get("sinks"), dict) or not d["sinks"]:
        return d
    transformations: list[dict[str, Any]] = d.setdefault("transformations", [])
    sources: dict[str, Any] = d.setdefault("sources", {})
    checks: list[dict[str, Any]] = d.setdefault("quality_checks", [])
    named = (t.get("name") for t in transformations if isinstance(t, dict))
    taken: set[str] = {*sources, *(n for n in named if isinstance(n, str)), *d["sinks"]}
    gdpr = "GDPR" in template.compliance
    if gdpr:
        sources[ERASURE_SOURCE] = {
            "type": "postgres",
            "connection": params["ERASURE_CONNECTION"],
            "table": params["ERASURE_TABLE"],
        }
        taken.add(ERASURE_SOURCE)
    masks = masks_for(template)
    guarded: dict[str, str] = {}  # a sink input -> the dataset that carries it through every control
    for sink in d["sinks"].values():
        original = sink.get("input")
        if not isinstance(original, str):
            continue
        if original not in guarded:
            current = original
            if gdpr:
                name = _free_name(f"{current}_gdpr", taken)
                sql = _gdpr_sql(template, current, params["RETENTION_DAYS"])
                transformations.append(
                    {"name": name, "type": "sql_transform", "inputs": [current, ERASURE_SOURCE], "sql": sql}
                )
                current = name
            if masks:
                name = _free_name(f"{current}_masked", taken)
                transformations.append({"name": name, "type": "mask", "input": current, "columns": dict(masks)})
                current = name
            guarded[original] = current
        sink["input"] = guarded[original]
    check_names = {n for n in (c.get("name") for c in checks if isinstance(c, dict)) if isinstance(n, str)}
    checks += _leak_checks(template, d["sinks"], masks, check_names)
    if "SOX" in template.compliance:
        _add_sox_audit(template, d, params, taken)
    return d


def _add_sox_audit(template: Template, d: dict[str, Any], params: dict[str, Any], taken: set[str]) -> None:
    """SOX: one audit row per sink and run, appended next to the first database sink after every sink loaded."""
    transformations: list[dict[str, Any]] = d["transformations"]
    sinks = dict(d["sinks"])
    # The audit table lives in the first database sink's database (file and object sinks have none).
    first = next((s for s in sinks.values() if s.get("type") in ("postgres", "sql") and s.get("connection")), None)
    if first is None:
        from service.templates.catalog import TemplateError

        message = "SOX writes its audit record next to a database sink (postgres or sql): there is none"
        raise TemplateError([{"path": "compliance", "message": message}])
    audit_input = _free_name("sox_audit_record", taken)
    transformations.append(
        {
            "name": audit_input,
            "type": "sql_transform",
            "inputs": sorted({s["input"] for s in sinks.values()}),
            "sql": _audit_sql(template, sinks),
        }
    )
    d["sinks"][AUDIT_SINK] = {
        "type": "postgres",
        "connection": first["connection"],
        "table": params["AUDIT_TABLE"],
        "input": audit_input,
        "mode": "append",
        "depends_on": list(sinks),
    }


def _leak_checks(
    template: Template, sinks: dict[str, Any], masks: dict[str, str], taken: set[str]
) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    for column, item in template.sensitive_columns().items():
        if column not in masks:
            continue
        pack = PACKS[CATEGORY_PACK[item.category]]
        for sink in item.sinks:
            if sink not in sinks:
                continue  # a customization replaced the sinks: the masks still apply to every sink
            expectation, kwargs = MASKED_CHECK[masks[column]]
            wanted = [(f"{CATEGORY_PACK[item.category].lower().replace('-', '')}_masked", expectation, kwargs)]
            wanted += [(c["name"], c["expectation"], c["kwargs"]) for c in pack["leak_checks"]]
            for prefix, exp, kw in wanted:
                name = f"{prefix}_{sink}_{column}"[:63].lower()
                if name in taken:
                    continue
                taken.add(name)
                checks.append(
                    {
                        "name": name,
                        "dataset": sink,
                        "expectation": exp,
                        "kwargs": {"column": column, **kw},
                        "severity": "error",
                    }
                )
    return checks


def describe() -> list[dict[str, Any]]:
    """The packs, for the API and the README."""
    return [
        {
            "tag": tag,
            "title": p["title"],
            "masks": {c: r["default"] for c, r in p["masks"].items()},
            "parameters": sorted(p.get("parameters", {})),
        }
        for tag, p in PACKS.items()
    ]


def missing_controls(template: Template, definition: dict[str, Any]) -> list[dict[str, str]]:
    """What a changed definition (PUT of a pipeline created from the template) lacks of the packs' controls.

    Every sink must still read a `mask` step covering the masked columns with an allowed strategy, the pack
    checks must still be there with severity error, and the SOX audit sink and the GDPR erasure source kept.
    """
    errors: list[dict[str, str]] = []
    if not template.compliance:
        return errors
    sinks = definition.get("sinks") or {}
    steps = {t.get("name"): t for t in definition.get("transformations") or [] if isinstance(t, dict)}
    masks = masks_for(template)
    allowed = {
        c: PACKS[CATEGORY_PACK[item.category]]["masks"][item.category]["allowed"]
        for c, item in template.sensitive_columns().items()
        if c in masks
    }
    for name, sink in sinks.items():
        if not masks or name == AUDIT_SINK:
            continue
        step = steps.get(sink.get("input"))
        columns = step.get("columns", {}) if step and step.get("type") == "mask" else {}
        if any(columns.get(c) not in allowed[c] for c in masks):
            message = f"{', '.join(template.compliance)}: the sink must read a mask step covering {', '.join(masks)}"
            errors.append({"path": f"definition.sinks.{name}.input", "message": message})
    expected = apply_packs(template, {"sinks": dict(sinks)}, _stand_in_params(template))
    present = {c.get("name"): c for c in definition.get("quality_checks") or [] if isinstance(c, dict)}
    for check in expected.get("quality_checks", []):
        got = present.get(check["name"])
        if got is None or got.get("severity") != "error" or got.get("expectation") != check["expectation"]:
            message = f"compliance check '{check['name']}' ({check['expectation']}) cannot be removed or weakened"
            errors.append({"path": "definition.quality_checks", "message": message})
    if "SOX" in template.compliance and AUDIT_SINK not in sinks:
        errors.append({"path": f"definition.sinks.{AUDIT_SINK}", "message": "SOX: the audit sink cannot be removed"})
    if "GDPR" in template.compliance and ERASURE_SOURCE not in (definition.get("sources") or {}):
        message = "GDPR: the erasure source cannot be removed"
        errors.append({"path": f"definition.sources.{ERASURE_SOURCE}", "message": message})
    return errors


def _stand_in_params(template: Template) -> dict[str, Any]:
    return {n: p.default if p.default is not None else "x" for n, p in template.all_parameters().items()}
