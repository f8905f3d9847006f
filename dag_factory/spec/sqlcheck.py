"""The shape of user-written SQL: a `sql` transformation or a source `query` is exactly one read-only query
(SELECT, WITH ... SELECT, VALUES), a `where`/`condition` is one predicate that stays inside the parentheses
the builder wraps it in. The parser (openlineage-sql) does not say how many statements it read nor of what
kind, and a text it cannot parse yields no tables at all: so the statements are counted and the parentheses
balanced here, by a small lexer that knows PostgreSQL's literals and comments, and a parse error is an error.

No Airflow here (the service validates with it).
"""

from __future__ import annotations

import re

# Jinja in SQL ({{ params.x }}) stands for a value (validation checked it is one): a literal replaces it.
JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)
_JINJA_COMMENT = re.compile(r"\{#.*?#\}", re.S)
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_QUERY_START = re.compile(r"^[\s(]*(select|with|values)\b", re.I)


class SqlShapeError(ValueError):
    """The text is not of the shape its field requires (the message says how)."""


def without_jinja(text: str) -> str:
    return JINJA.sub("0", _JINJA_COMMENT.sub("", text))


def code_of(text: str) -> str:
    """`text` with the contents of literals, quoted identifiers and comments blanked (kept as `'…'`, `"…"`
    and a space), so that `;` and parentheses in what remains are the statement's own.
    A line comment running to the end of the text is an error: it would swallow what the builder appends."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c, nxt = text[i], text[i + 1 : i + 2]
        if c == "-" and nxt == "-":
            end = text.find("\n", i)
            if end < 0:
                raise SqlShapeError("a -- comment must end with a line break (it would hide what follows)")
            out.append(" ")
            i = end
        elif c == "/" and nxt == "*":
            i = _block_comment_end(text, i)
            out.append(" ")
        elif c in "'\"":
            escapes = c == "'" and i > 0 and text[i - 1] in "eE" and not _word_char(text, i - 2)
            i = _quoted_end(text, i, c, escapes)
            out.append(c * 2)
        elif c == "$" and not _word_char(text, i - 1) and (m := _DOLLAR.match(text, i)):
            end = text.find(m.group(0), m.end())
            if end < 0:
                raise SqlShapeError("unterminated $-quoted string")
            out.append("''")
            i = end + len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _word_char(text: str, i: int) -> bool:
    return i >= 0 and (text[i].isalnum() or text[i] in "_$")


def _quoted_end(text: str, start: int, quote: str, backslash_escapes: bool) -> int:
    """Index after the literal (or quoted identifier) opened at `start`: doubled quotes, and with E'' a
    backslash, escape."""
    i = start + 1
    while i < len(text):
        if backslash_escapes and text[i] == "\\":
            i += 2
        elif text[i] == quote:
            if text[i + 1 : i + 2] != quote:
                return i + 1
            i += 2
        else:
            i += 1
    raise SqlShapeError(f"unterminated {'string literal' if quote == chr(39) else 'quoted identifier'}")


def _block_comment_end(text: str, start: int) -> int:
    """PostgreSQL block comments nest."""
    depth, i = 0, start
    while i < len(text):
        pair = text[i : i + 2]
        if pair == "/*":
            depth, i = depth + 1, i + 2
        elif pair == "*/":
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    raise SqlShapeError("unterminated /* comment")


def _parse_errors(statement: str) -> list[str]:
    """What the parser finds wrong with `statement` (one statement, Jinja already replaced), including any
    table it would write (SELECT INTO, INSERT/UPDATE/DELETE in a WITH)."""
    import openlineage_sql  # a compiled parser (no Airflow); imported when a definition has SQL

    result = openlineage_sql.parse([statement], dialect="postgres")
    if result.errors:
        return [f"not valid SQL: {e.message}" for e in result.errors[:1]]
    if result.out_tables:
        return [f"must only read, but writes {', '.join(t.qualified_name for t in result.out_tables)}"]
    return []


def select_errors(sql: str) -> list[str]:
    """Why `sql` is not exactly one read-only query (one trailing `;` is fine; empty: it is one)."""
    text = without_jinja(sql)
    try:
        code = code_of(text).strip()
    except SqlShapeError as exc:
        return [str(exc)]
    if code.endswith(";"):
        code = code[:-1]
    if ";" in code:
        return ["must be exactly one statement: found ';' between statements"]
    if not _QUERY_START.match(code):
        return ["must be one SELECT (or WITH ... SELECT): other statements are not allowed"]
    return _balance_errors(code) or _parse_errors(text)


def predicate_errors(predicate: str) -> list[str]:
    """Why `predicate` is not one SQL condition that stays inside `WHERE (...)` (empty: it is one)."""
    text = without_jinja(predicate)
    try:
        code = code_of(text)
    except SqlShapeError as exc:
        return [str(exc)]
    if ";" in code:
        return ["a predicate must not contain ';'"]
    if not code.strip():
        return ["a predicate must not be empty"]
    return _balance_errors(code) or _parse_errors(f"SELECT 1 FROM t WHERE ({text}\n)")


def _balance_errors(code: str) -> list[str]:
    depth = 0
    for c in code:
        depth += {"(": 1, ")": -1}.get(c, 0)
        if depth < 0:
            return ["unbalanced ')': it would close the parenthesis the text is wrapped in"]
    return ["unbalanced '(': a parenthesis is not closed"] if depth else []
