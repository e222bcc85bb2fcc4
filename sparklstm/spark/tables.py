"""Reading user tables (Parquet, CSV, JSON lines) into Spark, with clear errors.

Every job reads its input through :func:`read_table` and checks columns with
:func:`require_columns`, so a wrong path, format or column name is one clear message before any
work starts.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import SparklstmError

FORMATS = ("parquet", "csv", "json")
_EXT = {".parquet": "parquet", ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json",
        ".ndjson": "json"}
_COMPRESSED = (".gz", ".bz2", ".zst", ".snappy", ".lz4")


def _is_local(path: str) -> bool:
    return not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", path) or path.startswith("file:")


def detect_format(path: str) -> str:
    """parquet | csv | json, from the file's extension or the files inside a directory."""
    p = Path(path.removeprefix("file:"))
    candidates = [p] if p.is_file() else sorted(
        f for f in p.rglob("*") if f.is_file() and not f.name.startswith((".", "_"))
    )
    for f in candidates:
        suffixes = [s for s in f.suffixes if s not in _COMPRESSED]
        if suffixes and suffixes[-1].lower() in _EXT:
            return _EXT[suffixes[-1].lower()]
    raise SparklstmError(f"cannot tell the format of {path}; pass --format parquet|csv|json")


def read_table(spark, path: str, *, fmt: str | None = None):
    """A DataFrame over ``path`` (a file or a directory; local or any Hadoop URI).

    Example
    -------
    >>> df = read_table(spark, "emails.jsonl.gz")   # doctest: +SKIP
    """
    path = str(path)
    if _is_local(path):
        local = Path(path.removeprefix("file:"))
        if not local.exists():
            raise SparklstmError(f"input not found: {path}")
        if local.is_dir() and not any(local.iterdir()):
            raise SparklstmError(f"input directory is empty: {path}")
        fmt = fmt or detect_format(path)
    elif fmt is None:
        raise SparklstmError(f"pass --format for a remote input: {path}")
    if fmt not in FORMATS:
        raise SparklstmError(f"format must be one of {FORMATS}, got {fmt!r}")
    reader = spark.read
    if fmt == "csv":
        # Texts contain commas, quotes and newlines: quoted multi-line fields, RFC 4180 escaping.
        sep = "\t" if path.endswith(".tsv") else ","
        reader = reader.options(header=True, multiLine=True, escape='"', sep=sep)
    try:
        df = getattr(reader, fmt)(path)
        df.schema  # forces schema resolution so an unreadable input fails here, not mid-job
    except spark_errors() as e:
        raise SparklstmError(f"cannot read {path} as {fmt}: {first_line(e)}") from None
    if fmt == "json" and df.columns == ["_corrupt_record"]:
        raise SparklstmError(f"cannot read {path} as JSON lines: no record parsed")
    return df


def require_columns(df, columns: dict[str, str], *, source: str) -> None:
    """Check that each ``{column: role}`` exists; text columns must be strings."""
    from pyspark.sql.types import StringType

    for column, role in columns.items():
        if column not in df.columns:
            raise SparklstmError(
                f"{role} column {column!r} not found in {source} (columns: {', '.join(df.columns)})"
            )
        if role == "text" and not isinstance(df.schema[column].dataType, StringType):
            kind = df.schema[column].dataType.simpleString()
            raise SparklstmError(f"text column {column!r} in {source} must be a string, not {kind}")


def spark_errors() -> tuple:
    """What a failed Spark call raises: PySpark's exceptions, and py4j's Py4JJavaError for the JVM
    errors PySpark leaves unconverted (a plain SparkException: unreadable file, aborted job)."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    return (PySparkException, Py4JJavaError)


def first_line(error: Exception) -> str:
    """A one-line summary of a Spark/JVM error (their messages run to many lines)."""
    java = getattr(error, "java_exception", None)  # py4j: str(error) is "An error occurred while calling o42.parquet."
    text = str(java.getMessage() or java.toString()) if java is not None else str(error)
    text = text.strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("JVM stacktrace", "at ", "Traceback")):
            return line[:500]
    return type(error).__name__


def is_empty(df) -> bool:
    return df.limit(1).count() == 0
