"""How driver-side values reach Spark's Python workers, on a classic session and on Spark Connect.

A classic session (py4j, the driver's JVM in this process) broadcasts: the value is sent to each
executor once, whatever the number of tasks. Spark Connect has no SparkContext, so no broadcast:

* the **model** travels as a session artifact (``spark.addArtifacts(file=True)``): uploaded in
  chunks once per session (no gRPC message limit, which is 128 MiB by default), fetched once per
  executor, and read inside the UDF with ``SparkFiles.get``. The alternative, the model's bytes in
  the UDF's closure, was rejected: the closure is part of the plan, so it would be capped at about
  127 MiB and sent to the Python worker again with every task.
* except for **streaming queries**: Spark 4.3 runs a Connect streaming query's tasks without the
  session's artifacts (``SparkFiles.get`` points at a file that is not there), so a stream's
  model rides in the closure (``ship="closure"``), which caps it at the plan's size limit.
* small values (prep's vocabulary, a few MB at most) ride in the closure.

Either way the worker sees an object with ``.value``, as with a broadcast variable.
"""

import hashlib
import io
import os
import tarfile
import tempfile
from pathlib import Path

from ..errors import SparklstmError
from .session import is_connect

SHIPS = ("auto", "closure")
# Spark Connect's default gRPC message limit (spark.connect.grpc.maxInboundMessageSize) is
# 128 MiB for the whole plan; leave room for the rest of it.
CLOSURE_LIMIT = 120 * 2**20

# Artifacts this process uploaded, per Connect session: (session id, artifact name).
_UPLOADED: set = set()


class Inline:
    """A value carried in the UDF's closure (Spark Connect): ``.value`` like a broadcast."""

    def __init__(self, value):
        self.value = value


class ArtifactFiles:
    """A model directory's files shipped as one Connect artifact (an uncompressed tar)."""

    def __init__(self, name: str):
        self.name = name

    @property
    def value(self) -> dict[str, bytes]:
        # Runs in the Python worker: SparkFiles resolves the session's artifact directory.
        from pyspark import SparkFiles

        path = SparkFiles.get(self.name)
        if not os.path.exists(path):
            raise RuntimeError(
                f"sparklstm: the model artifact {self.name} is not visible to this task; Spark "
                "Connect does not give streaming queries the session's artifacts: use "
                "sparklstm's start_stream/score_stream, or classify_udf(..., ship='closure')")
        with tarfile.open(path) as tar:
            return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def ship_value(spark, value):
    """``value`` for the workers: a broadcast on a classic session, the closure on Connect."""
    if is_connect(spark):
        return Inline(value)
    return spark.sparkContext.broadcast(value)


def ship_model(spark, files: dict[str, bytes], *, ship: str = "auto"):
    """A model directory's files for the workers: a broadcast on a classic session, one artifact
    per distinct model on Connect (named by its content's sha256, so a session never holds two
    different models under one name and uploads each model once); ``ship="closure"``: in the
    UDF's closure, on either kind of session."""
    if ship == "closure":
        size = sum(len(b) for b in files.values())
        if is_connect(spark) and size > CLOSURE_LIMIT:
            raise SparklstmError(
                f"the model ({size / 2**20:.0f} MiB) is too large to travel in a Spark Connect "
                f"plan (at most {CLOSURE_LIMIT // 2**20} MiB); use a classic session for it")
        return Inline(files)
    if not is_connect(spark):
        return spark.sparkContext.broadcast(files)
    data = _tar(files)
    name = f"sparklstm-model-{hashlib.sha256(data).hexdigest()[:32]}.tar"
    key = (spark.session_id, name)
    if key not in _UPLOADED:
        with tempfile.TemporaryDirectory(prefix="sparklstm-ship-") as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            spark.addArtifacts(str(path), file=True)
        _UPLOADED.add(key)
    return ArtifactFiles(name)


def _tar(files: dict[str, bytes]) -> bytes:
    """The files as a deterministic tar (sorted names, zero mtimes): same model, same bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            tar.addfile(info, io.BytesIO(files[name]))
    return buffer.getvalue()
