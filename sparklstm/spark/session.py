"""The SparkSession for CLI and local use, with sane local defaults, and the frame of a job (jobs/).

Inside ``spark-submit`` (jobs/) or a notebook the existing session is used as it is; only when
there is none does sparklstm start one (``local[*]`` unless ``master`` says otherwise).
"""

from __future__ import annotations

import io
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from ..errors import SparklstmError

LOG4J = Path(__file__).with_name("log4j2.properties")


@contextmanager
def session_conf(spark, settings: dict[str, str]):
    """Set runtime SQL confs of ``spark`` for the queries run inside; restore them after."""
    before = {key: spark.conf.get(key, None) for key in settings}  # None: not set by anyone
    try:
        for key, value in settings.items():
            spark.conf.set(key, value)
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def is_connect(spark) -> bool:
    """Whether ``spark`` is a Spark Connect session (no SparkContext, no JVM in this process).

    Checked by type, without importing pyspark.sql.connect (which needs the connect extras).
    """
    return type(spark).__module__.startswith("pyspark.sql.connect")


def get_spark(*, master: str | None = None, app_name: str = "sparklstm", conf: dict | None = None):
    """The active SparkSession, or a new one on ``master`` (default ``local[*]``).

    With ``SPARK_REMOTE`` set (PySpark's own variable, e.g. ``sc://host:15002``) and no ``master``,
    the session is a Spark Connect client of that server.

    Example
    -------
    >>> spark = get_spark(master="local[2]")     # doctest: +SKIP
    """
    # Python workers must run this interpreter (same torch, same sparklstm) as the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(app_name)
    if os.environ.get("SPARK_REMOTE") and master is None:
        builder = builder.remote(os.environ["SPARK_REMOTE"])
        for key, value in (conf or {}).items():
            builder = builder.config(key, value)
        return builder.getOrCreate()
    if "PYSPARK_GATEWAY_PORT" in os.environ and master is None:
        # Launched by spark-submit: its --master and --conf rule; add only what was asked for.
        for key, value in (conf or {}).items():
            builder = builder.config(key, value)
        return builder.getOrCreate()
    master = master or os.environ.get("SPARKLSTM_MASTER") or "local[*]"
    settings = {
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{LOG4J}",
        "spark.executor.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{LOG4J}",
    }
    if master.startswith("local"):
        # The default 200 shuffle partitions only add scheduling overhead on one machine.
        settings["spark.sql.shuffle.partitions"] = str(max(4, 2 * (os.cpu_count() or 2)))
        settings["spark.driver.memory"] = os.environ.get("SPARKLSTM_DRIVER_MEMORY", "4g")
    settings.update(conf or {})
    builder = builder.master(master)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


# --------------------------------------------------------------------------------------------
# spark-submit jobs (jobs/*.py)


def submit_jvm():
    """The JVM of the spark-submit that started this Python driver; None outside spark-submit."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return None
    from pyspark import SparkContext

    SparkContext._ensure_initialized()  # connects to spark-submit's gateway; starts no context
    return SparkContext._jvm


def job_spark(*, app_name: str):
    """The session of a spark-submit job: Spark logs at WARN, so the job's own lines stand out
    (about 10 lines of Spark's on a local run instead of about 240), unless the submitter chose a
    level (``--conf spark.log.level=INFO``)."""
    jvm = submit_jvm()
    quiet = jvm is not None and jvm.System.getProperty("spark.log.level") is None
    return get_spark(app_name=app_name, conf={"spark.log.level": "WARN"} if quiet else None)


def run_job(work: Callable[[list[str] | None], str], *, argv: list[str] | None = None) -> int:
    """Run a job's ``work(argv)``, print the line it returns on stdout; returns the exit code.

    A ``SparklstmError`` is one ``error: ...`` line on stderr and exit code 2; an unexpected failure
    one line and exit code 1 (``SPARKLSTM_DEBUG=1`` re-raises it). Under spark-submit, stderr is
    the JVM's: Spark merges the Python driver's own stderr into its stdout.
    """
    with _jvm_stderr(submit_jvm()):
        try:
            line = work(argv)
        except SparklstmError as e:
            print(f"error: {_with_worker_hint(str(e))}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except Exception as e:  # a bug, or an environment problem we did not foresee
            if os.environ.get("SPARKLSTM_DEBUG"):
                raise
            message = (str(e).strip().splitlines() or [""])[0]
            print(f"error: unexpected {type(e).__name__}: {message} "
                  "(set SPARKLSTM_DEBUG=1 for the traceback)", file=sys.stderr)
            return 1
    print(line, flush=True)
    return 0


@contextmanager
def _jvm_stderr(jvm):
    """sys.stderr writes to the JVM's System.err (the process's real stderr) while inside.

    spark-submit runs a Python driver with its stderr merged into its stdout (Spark's
    PythonRunner), so progress and ``error:`` lines would land among the results.
    """
    if jvm is None:
        yield
        return
    saved = sys.stderr
    sys.stderr = _JvmStream(jvm.System.err)
    try:
        yield
    finally:
        sys.stderr = saved


class _JvmStream(io.TextIOBase):
    """A text stream onto a java.io.PrintStream, in UTF-8 whatever the JVM's charset."""

    def __init__(self, stream):
        self._stream = stream

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        data = text.encode("utf-8")
        self._stream.write(bytearray(data), 0, len(data))
        self._stream.flush()
        return len(text)


def _with_worker_hint(message: str) -> str:
    """What to do when Spark could not start its Python workers: its own message names only the
    missing program."""
    if re.search(r'Cannot run program "[^"]*python', message):
        return (message + " (Spark's Python workers cannot start: PYSPARK_PYTHON, or "
                "spark.pyspark.python, must name a Python with sparklstm installed on every worker)")
    return message
