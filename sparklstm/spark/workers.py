"""Check once per session that Spark's Python workers can run sparklstm, and say why not in one line.

Spark starts its Python workers with ``PYSPARK_PYTHON`` (or ``spark.pyspark.python``), not with the
interpreter of the notebook or driver. When that Python lacks sparklstm or its dependencies, the
first query that reaches a UDF fails with a worker traceback of 60-odd lines ending in
``No module named 'pandas'``. A one-row probe before the UDF is built turns that into one line.
"""

import re
import sys

from ..errors import SparklstmError

# What the scoring and prep UDFs import inside the worker.
NEEDED = ("pyarrow", "pandas", "numpy", "torch", "safetensors", "sparklstm")

# Sessions already probed in this process (classic: application id; Connect: session id).
_CHECKED: set = set()


def check_workers(spark) -> None:
    """Run a one-row Python UDF that imports what sparklstm's UDFs need; raise a one-line
    :class:`SparklstmError` naming the missing module and the fix. Once per session (~0.3 s)."""
    from pyspark.errors import PythonException
    from pyspark.sql import functions as F

    from .session import is_connect

    key = spark.session_id if is_connect(spark) else spark.sparkContext.applicationId
    if key in _CHECKED:
        return
    probe = F.udf(_probe_function(), "string")
    try:
        problem = spark.range(1).select(probe().alias("p")).first()["p"]
    except PythonException as e:
        # The worker could not even run the probe: pyspark's own Arrow path needs pyarrow and
        # pandas, so an interpreter without them fails while unpickling, before our code runs.
        missing = re.findall(r"No module named '([^']+)'", str(e))
        problem = f"No module named {missing[-1]!r}" if missing else _last_error_line(str(e))
    if problem:
        raise SparklstmError(
            f"Spark's Python workers cannot run sparklstm ({problem}): set PYSPARK_PYTHON (or "
            f"spark.pyspark.python) to a Python with sparklstm installed, e.g. {sys.executable}, "
            "before the session starts; on a cluster, ship an environment (docs/operations.md)")
    _CHECKED.add(key)


def _probe_function():
    """The probe, built inside a function so cloudpickle ships it by value: unpickling it in the
    worker must not itself need sparklstm."""
    needed = NEEDED

    def probe():
        import importlib
        import sys as worker_sys

        for name in needed:
            try:
                importlib.import_module(name)
            except Exception as e:  # ImportError, or a broken install
                return f"{type(e).__name__}: {e} in {worker_sys.executable}"
        return None

    return probe


def _last_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if re.match(r"\s*\w+(Error|Exception):", ln)]
    return lines[-1][:300] if lines else "the Python worker failed"
