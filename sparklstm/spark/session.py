"""The SparkSession for CLI and local use, with sane local defaults.

Inside ``spark-submit`` (jobs/) or a notebook the existing session is used as it is; only when
there is none does sparklstm start one (``local[*]`` unless ``master`` says otherwise).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

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


def get_spark(*, master: str | None = None, app_name: str = "sparklstm", conf: dict | None = None):
    """The active SparkSession, or a new one on ``master`` (default ``local[*]``).

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
