"""Files and S3 objects for the pipeline operators: list/read/write through one small store interface, and
the Arrow <-> PostgreSQL bridge (pyarrow reads and writes the formats; PostgreSQL loads and unloads CSV with
COPY, so no row passes through Python objects except nested JSON values).

The local store of a run only ever touches paths under its tenant's root, `<file root>/<tenant>` (file root:
`PIPELINE_FILE_ROOT`, default `<PIPELINE_DATA_DIR>/files`; tenant: the part of the DAG id before the dot, which
the service sets and no definition can): relative paths are resolved (symlinks included) and must stay inside
it, so no tenant reads, overwrites or deletes another's files.

pyarrow and boto3 are imported inside the functions: DAG files import the operators, and are parsed far more
often than these tasks run.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import posixpath
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from psycopg import sql

from dag_factory.exceptions import DagFactoryError
from dag_factory.hooks.postgres import PostgresHook, column_list, table_ident

FILE_ROOT_ENV = "PIPELINE_FILE_ROOT"
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
ROWS_PER_PART = 1_000_000
EXTENSIONS = {"csv": ".csv", "parquet": ".parquet"}
# service.auth.TENANT_PATTERN (dag_factory never imports the service): no '.', '/', nor a name like '..'.
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def file_root() -> Path:
    """The directory the workers may read and write: $PIPELINE_FILE_ROOT, else <data dir>/files."""
    root = os.environ.get(FILE_ROOT_ENV) or str(Path(os.environ.get("PIPELINE_DATA_DIR") or ".data") / "files")
    return Path(root).resolve()


def tenant_of(dag_id: str) -> str:
    """The tenant of a pipeline DAG (`<tenant>.<pipeline>`, the id the service gives it from the caller's
    token). Any other DAG has no tenant, and so no file root: its file tasks fail."""
    tenant, dot, _ = dag_id.partition(".")
    if not dot or not TENANT_PATTERN.fullmatch(tenant):
        raise DagFactoryError(f"file sources and sinks run only in pipeline DAGs (<tenant>.<pipeline>), not {dag_id!r}")
    return tenant


def tenant_root(tenant: str, root: Path | None = None) -> Path:
    """`<file root>/<tenant>`, created on demand. Refused unless it is a plain directory right there: a
    symlink in its place could lead into another tenant's root."""
    if not TENANT_PATTERN.fullmatch(tenant):
        raise DagFactoryError(f"{tenant!r} is not a tenant id")
    base = (root or file_root()).resolve()
    path = base / tenant
    path.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.resolve() != path:
        raise DagFactoryError(f"the file root of tenant {tenant!r} is not a directory of its own under {base}")
    return path


def safe_path(root: Path, relative: str) -> Path:
    """`relative` under `root`, resolved; an absolute path, `..` or a symlink leading out is an error."""
    if relative.startswith("/") or "\x00" in relative:
        raise DagFactoryError(f"path {relative!r} must be relative to the file root")
    path = (root / relative).resolve()
    if path != root and root not in path.parents:
        raise DagFactoryError(f"path {relative!r} leads outside the file root")
    return path


class ObjectStore(Protocol):
    """Keys are '/'-separated names (relative to the file root, or keys of a bucket)."""

    def list_keys(self, prefix: str) -> list[str]: ...
    def read(self, key: str) -> bytes: ...
    def write(self, key: str, data: bytes) -> None: ...
    def delete(self, keys: list[str]) -> None: ...
    def lineage(self, key: str) -> tuple[str, str]: ...


class LocalStore:
    def __init__(self, root: Path | None = None):
        self.root = (root or file_root()).resolve()

    def _path(self, key: str) -> Path:
        return safe_path(self.root, key)

    def list_keys(self, prefix: str) -> list[str]:
        """Every file at or under `prefix` (a file or a directory)."""
        base = self._path(prefix)
        if base.is_file():
            return [base.relative_to(self.root).as_posix()]
        if not base.is_dir():
            return []
        # rglob does not follow directory symlinks; a symlinked file pointing outside is filtered here.
        files = (p for p in base.rglob("*") if p.is_file() and self.root in p.resolve().parents)
        return sorted(p.relative_to(self.root).as_posix() for p in files)

    def read(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def write(self, key: str, data: bytes) -> None:
        """Atomic: readers see the old file or the whole new one, never a partial write."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(path)

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)

    def lineage(self, key: str) -> tuple[str, str]:
        return "file", str(self._path(key))


class S3Store:
    """A bucket through a boto3 S3 client (the amazon provider's S3Hook makes it from an `aws` connection)."""

    def __init__(self, client: Any, bucket: str):
        self.client = client
        self.bucket = bucket

    @classmethod
    def from_connection(cls, conn_id: str, bucket: str) -> S3Store:
        """Only with the connection's own access key: without one boto3 would fall back to the workers' AWS
        identity, which all tenants share (a bucket it can reach would be every tenant's)."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        hook = S3Hook(aws_conn_id=conn_id)
        if not hook.get_connection(conn_id).login:
            raise DagFactoryError(
                f"connection {conn_id!r} has no access key: s3 is reached only with the connection's own credentials"
            )
        # The network policy (connections.network): every request goes to an address checked when connecting.
        from connections.pinned import enforce_on_boto_client

        verify = (hook.get_connection(conn_id).extra_dejson or {}).get("verify", True) is not False
        return cls(enforce_on_boto_client(hook.get_conn(), verify=verify), bucket)

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/")]
        return sorted(keys)

    def read(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def write(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):  # the API's batch limit
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def lineage(self, key: str) -> tuple[str, str]:
        return f"s3://{self.bucket}", key


def matching(store: ObjectStore, prefix: str, glob: str) -> list[str]:
    """Keys at or under `prefix` whose path relative to it matches `glob` (fnmatch: `*` spans '/').

    A key that is the prefix itself (one file named exactly) is matched by its base name."""
    if isinstance(store, LocalStore) and prefix:
        prefix = posixpath.normpath(prefix)  # `./in/` lists as `in/...`; `..` stays and is refused by the store
        prefix = "" if prefix == "." else prefix
    out = []
    for key in store.list_keys(prefix):
        rel = key[len(prefix) :].lstrip("/") if key.startswith(prefix) else key
        if fnmatch.fnmatchcase(rel or key.rsplit("/", 1)[-1], glob):
            out.append(key)
    return out


# -- formats -------------------------------------------------------------------------------------------------
def read_table(data: bytes, fmt: str, *, delimiter: str = ",") -> Any:
    """One file as an Arrow table. CSV: only an empty unquoted field is NULL ('NA' stays a string)."""
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    if fmt == "csv":
        return pcsv.read_csv(
            io.BytesIO(data),
            parse_options=pcsv.ParseOptions(delimiter=delimiter),
            convert_options=pcsv.ConvertOptions(
                null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False
            ),
        )
    if fmt == "jsonl":
        return pjson.read_json(io.BytesIO(data))
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(data))
    raise DagFactoryError(f"unknown format {fmt!r}")


def read_objects(store: ObjectStore, keys: list[str], fmt: str, *, delimiter: str = ",") -> tuple[Any, int]:
    """All `keys` as one Arrow table (schemas unified: an int column in one file and a double in another
    become double) and the bytes read."""
    import pyarrow as pa

    tables, size = [], 0
    for key in keys:
        data = store.read(key)
        size += len(data)
        try:
            tables.append(read_table(data, fmt, delimiter=delimiter))
        except (pa.ArrowException, ValueError) as exc:
            raise DagFactoryError(f"cannot read {key!r} as {fmt}: {exc}") from None
    try:
        return pa.concat_tables(tables, promote_options="permissive"), size
    except (pa.ArrowException, ValueError) as exc:
        raise DagFactoryError(f"the files do not share a schema: {exc}") from None


def write_table(table: Any, fmt: str) -> bytes:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    if fmt == "csv":
        pcsv.write_csv(table, buf)
    elif fmt == "parquet":
        pq.write_table(table, buf)
    else:
        raise DagFactoryError(f"cannot write format {fmt!r} (csv or parquet)")
    return buf.getvalue()


# -- Arrow -> PostgreSQL --------------------------------------------------------------------------------------
def _pg_type(t: Any) -> str | None:
    """The PostgreSQL type for an Arrow type that CSV carries as is; None: converted first (see _normalise)."""
    import pyarrow.types as pt

    simple = [
        (pt.is_boolean, "boolean"),
        (lambda x: pt.is_int8(x) or pt.is_int16(x) or pt.is_uint8(x), "smallint"),
        (lambda x: pt.is_int32(x) or pt.is_uint16(x), "integer"),
        (lambda x: pt.is_int64(x) or pt.is_uint32(x), "bigint"),
        (pt.is_uint64, "numeric(20,0)"),
        (lambda x: pt.is_float16(x) or pt.is_float32(x), "real"),
        (pt.is_float64, "double precision"),
        (lambda x: pt.is_string(x) or pt.is_large_string(x), "text"),
        (pt.is_date, "date"),
        (pt.is_time, "time"),
    ]
    for test, name in simple:
        if test(t):
            return name
    if pt.is_decimal(t):
        return f"numeric({t.precision},{t.scale})" if t.precision <= 1000 else "numeric"
    if pt.is_timestamp(t):
        return "timestamp with time zone" if t.tz else "timestamp without time zone"
    return None


def _normalise(table: Any) -> tuple[Any, list[tuple[str, str]]]:
    """The table with every column in a CSV-friendly type, and the staging columns [(name, pg type)].

    Nested values (JSON objects and arrays) become jsonb, binary bytea, all-null columns text."""
    import pyarrow as pa
    import pyarrow.types as pt

    arrays, columns, seen = [], [], set()
    for i, field in enumerate(table.schema):
        col = table.column(i)
        t = field.type
        if pt.is_dictionary(t):
            col, t = col.cast(t.value_type), t.value_type
        pg = _pg_type(t)
        if pg is None:
            if pt.is_nested(t):
                pg, values = "jsonb", [None if v is None else json.dumps(v, default=str) for v in col.to_pylist()]
            elif pt.is_binary(t) or pt.is_large_binary(t) or pt.is_fixed_size_binary(t):
                pg, values = "bytea", [None if v is None else "\\x" + v.hex() for v in col.to_pylist()]
            elif pt.is_duration(t):
                pg = "interval"
                values = [None if v is None else f"{v.total_seconds()} seconds" for v in col.to_pylist()]
            else:  # null-typed (every value missing) and anything exotic: text
                pg, values = "text", [None if v is None else str(v) for v in col.to_pylist()]
            col = pa.array(values, pa.string())
        name = (field.name or f"column_{i + 1}")[:63]
        if name in seen:
            raise DagFactoryError(f"column {name!r} appears twice (names are cut to 63 characters)")
        seen.add(name)
        arrays.append(col)
        columns.append((name, pg))
    return pa.table(arrays, names=[n for n, _ in columns]), columns


def load_arrow(hook: PostgresHook, target: tuple[str, str], table: Any) -> int:
    """(Re)create `target` (unlogged: a staging table) from the Arrow schema and COPY the rows in, in one
    transaction: a failed or retried load leaves nothing half-written. Returns the rows loaded."""
    import pyarrow.csv as pcsv

    table, columns = _normalise(table)
    buf = io.BytesIO()
    pcsv.write_csv(table, buf, write_options=pcsv.WriteOptions(include_header=False))
    copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, FREEZE)").format(
        table_ident(target), column_list([n for n, _ in columns])
    )
    data = buf.getbuffer()
    with hook.session() as s:
        s.create_table(target, columns, replace=True, unlogged=True)
        with s.cur.copy(copy) as into:
            for i in range(0, len(data), 1 << 20):
                into.write(data[i : i + (1 << 20)])
        return int(s.cur.rowcount)


# -- PostgreSQL -> Arrow --------------------------------------------------------------------------------------
_SIMPLE_TYPES = {
    "smallint": "int16",
    "integer": "int32",
    "bigint": "int64",
    "real": "float32",
    "double precision": "float64",
    "boolean": "bool_",
    "text": "string",
    "date": "date32",
}


def _arrow_column(name: str, type_sql: str) -> tuple[sql.Composable, Any, bool]:
    """(select expression, Arrow type to parse its CSV text as, whether it is an unconstrained numeric)."""
    import pyarrow as pa

    ident = sql.Identifier(name)
    base = type_sql.split("(")[0].strip()
    if type_sql in _SIMPLE_TYPES:
        return ident, getattr(pa, _SIMPLE_TYPES[type_sql])(), False
    if base in ("character varying", "character") or type_sql == "name":
        return ident, pa.string(), False
    if base == "numeric":
        if "(" in type_sql:
            precision, _, scale = type_sql[type_sql.index("(") + 1 : -1].partition(",")
            if int(precision) <= 38:
                return ident, pa.decimal128(int(precision), int(scale or 0)), False
        return sql.SQL("{}::text").format(ident), pa.string(), True
    if type_sql.startswith("timestamp") and type_sql.endswith("with time zone") and "without" not in type_sql:
        # As UTC wall time: Arrow's CSV reader does not parse PostgreSQL's `+00` offsets.
        return sql.SQL("({} AT TIME ZONE 'UTC')").format(ident), pa.timestamp("us"), False
    if type_sql.startswith("timestamp"):
        return ident, pa.timestamp("us"), False
    return sql.SQL("{}::text").format(ident), pa.string(), False


def _numeric_column(col: Any) -> Any:
    """Unconstrained numeric values (as text) as the narrowest decimal128 that holds them all; text when
    none does (more than 38 digits)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.ltrim(col.combine_chunks() if hasattr(col, "combine_chunks") else col, "-")
    if text.null_count == len(text):
        return col.cast(pa.decimal128(38, 0))
    dot = pc.find_substring(text, ".")
    length = pc.utf8_length(text)
    has_dot = pc.greater_equal(dot, 0)
    scale = pc.max(pc.if_else(has_dot, pc.subtract(pc.subtract(length, dot), 1), 0)).as_py() or 0
    digits = pc.max(pc.if_else(has_dot, dot, length)).as_py() or 0
    if digits + scale > 38 or pc.any(pc.match_substring_regex(text, "[^0-9.]")).as_py():
        return col  # NaN, Infinity or too many digits for a decimal: keep the exact text
    return col.cast(pa.decimal128(max(digits + scale, 1), scale))


def fetch_arrow(hook: PostgresHook, table: tuple[str, str]) -> Any:
    """A staged table (or view) as an Arrow table with matching types, through one CSV COPY."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    with hook.session(read_only=True) as s:
        columns = s.require_columns(table, f"connection {hook.conn_id}")
        plan = [_arrow_column(n, t) for n, t in columns]
        select = sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(e, sql.Identifier(n)) for (e, _, _), (n, _) in zip(plan, columns, strict=True)
        )
        query = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT csv)").format(select, table_ident(table))
        buf = io.BytesIO()
        with s.cur.copy(query) as out:
            for block in out:
                buf.write(block)
    names = [n for n, _ in columns]
    if not buf.tell():
        return pa.table({n: pa.array([], t) for n, (_, t, _) in zip(names, plan, strict=True)})
    parsed = pcsv.read_csv(
        io.BytesIO(buf.getvalue()),
        read_options=pcsv.ReadOptions(column_names=[f"c{i}" for i in range(len(names))]),
        convert_options=pcsv.ConvertOptions(
            column_types={f"c{i}": t for i, (_, t, _) in enumerate(plan)},
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )
    arrays = [
        _numeric_column(parsed.column(i)) if numeric else parsed.column(i) for i, (_, _, numeric) in enumerate(plan)
    ]
    return pa.table(arrays, names=names)


# -- partitioned writes ---------------------------------------------------------------------------------------
def run_tag(run_id: str) -> str:
    """A short name unique per run, for part files (a retried task of the same run writes the same names)."""
    return hashlib.sha1(run_id.encode()).hexdigest()[:12]


def _partition_value(value: Any) -> str:
    if value is None:
        return HIVE_NULL
    text = (
        value.isoformat(sep=" ")
        if hasattr(value, "hour")
        else (value.isoformat() if hasattr(value, "isoformat") else str(value))
    )
    return quote(text, safe=" -_.~")


def partitions(table: Any, partition_by: list[str]) -> Iterable[tuple[str, Any]]:
    """(`col=value/...` directory, rows without the partition columns) per distinct value combination."""
    import pyarrow.compute as pc

    missing = [c for c in partition_by if c not in table.column_names]
    if missing:
        raise DagFactoryError(
            f"partition_by column(s) {', '.join(missing)} not in the dataset ({', '.join(table.column_names)})"
        )
    if not partition_by:
        yield "", table
        return
    rest = [c for c in table.column_names if c not in partition_by]
    for combo in table.group_by(partition_by).aggregate([]).to_pylist():
        mask = None
        for col in partition_by:
            value = combo[col]
            cond = pc.is_null(table[col]) if value is None else pc.fill_null(pc.equal(table[col], value), False)
            mask = cond if mask is None else pc.and_(mask, cond)
        directory = "/".join(f"{quote(c, safe='')}={_partition_value(combo[c])}" for c in partition_by) + "/"
        yield directory, table.filter(mask).select(rest)


def write_dataset(
    store: ObjectStore, prefix: str, table: Any, *, fmt: str, partition_by: list[str], mode: str, tag: str
) -> tuple[list[str], int]:
    """Write `table` under `prefix` (a directory) as `[col=value/...]part-<tag>-NNNN.<ext>` files.

    overwrite: the new files are written first, then every other file under the prefix is deleted (readers
    never find the prefix empty); append: only adds files. Returns (keys written, bytes written)."""
    if mode not in ("overwrite", "append"):
        raise DagFactoryError(f"mode must be overwrite or append, not {mode!r}")
    prefix = prefix.rstrip("/") + "/"
    before = set(store.list_keys(prefix)) if mode == "overwrite" else set()
    written, size = [], 0
    for directory, part in partitions(table, partition_by):
        for n, start in enumerate(range(0, max(part.num_rows, 1), ROWS_PER_PART)):
            key = f"{prefix}{directory}part-{tag}-{n:04d}{EXTENSIONS[fmt]}"
            data = write_table(part.slice(start, ROWS_PER_PART), fmt)
            store.write(key, data)
            written.append(key)
            size += len(data)
    store.delete(sorted(before - set(written)))
    return written, size
