"""Structured Streaming scoring: new Parquet files in a directory -> scored Parquet, exactly once.

``score_stream(spark, input_dir=..., model_dir=..., out=..., checkpoint=...)`` runs a query that
reads each new file of ``input_dir`` with Spark's file source, adds the same ``classify_udf``
prediction as batch :func:`~sparklstm.spark.scoring.score`, and writes Parquet through the file sink.
The checkpoint (offsets and commits) and the sink's ``_spark_metadata`` log make every input row
appear exactly once in the output as ``spark.read.parquet(out)`` reads it, across crashes and
restarts on the same checkpoint.

The model is pinned: every output row carries its weights' sha256 (``model_id``), and the
checkpoint keeps it in ``sparklstm-model.json``, so a restart with another model is refused
unless ``allow_model_change`` says so (README, "Rolling out a new model").
"""

import json
import signal
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..errors import SparklstmError

TRIGGERS = ("processing-time", "available-now")
PIN_FILE = "sparklstm-model.json"


@dataclass
class StreamSummary:
    """What one run of the query did: batches and rows it committed, and how it ended."""

    model_id: str
    batches: int = 0
    rows: int = 0
    stopped: bool = False  # by Ctrl-C / SIGTERM; False: the query finished (available-now)


@dataclass
class ScoringStream:
    """A started scoring query (``.query`` is the ``StreamingQuery``) and the model it pinned."""

    query: object
    model_id: str
    spark: object
    _seen: set = field(default_factory=set)

    def run(self, *, log: Callable[[str], None] | None = None, poll_s: float = 0.5) -> StreamSummary:
        """Block until the query ends (available-now) or Ctrl-C / SIGTERM stops it, logging one
        line per committed batch; a stop leaves the checkpoint consistent (``query.stop()``)."""
        from .tables import first_line, spark_errors

        log = log or (lambda message: None)
        summary = StreamSummary(model_id=self.model_id)
        stop = threading.Event()
        previous = _stop_on_signals(stop)
        try:
            while self.query.isActive and not stop.is_set():
                self.query.awaitTermination(poll_s)  # raises if a batch failed
                self._report(summary, log)
            if stop.is_set() and self.query.isActive:
                log("stopping: waiting for the query to stop (Ctrl-C again to abort)")
                _quiet_aborts(self.spark)
                self.query.stop()
                summary.stopped = True
            self.query.awaitTermination()  # re-raises the query's failure, if any
            self._report(summary, log)
        except spark_errors() as e:
            raise SparklstmError(f"streaming query failed: {first_line(e)}") from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.query.isActive:  # an unexpected error here: don't leave the query running
                self.query.stop()
        return summary

    def _report(self, summary: StreamSummary, log) -> None:
        for p in self.query.recentProgress:
            # Attributes, not keys: under Spark Connect the progress JSON has no top-level
            # numInputRows key (the attribute sums the sources' counts in both modes).
            rows, batch = p.numInputRows, p.batchId
            # Idle triggers report progress with 0 rows (and the next batch's id): skip them.
            if not rows or batch in self._seen:
                continue
            self._seen.add(batch)
            summary.batches += 1
            summary.rows += rows
            log(f"batch {batch}: {rows} rows, {p.processedRowsPerSecond or 0:.0f} rows/s "
                f"({summary.rows} rows in {summary.batches} batches so far)")


def _quiet_aborts(spark) -> None:
    """Stopping interrupts the running batch, and the driver then logs the aborted write with a
    Java stack trace at ERROR: expected here (the batch re-runs on restart), so silence it."""
    from .session import is_connect

    if is_connect(spark):
        return  # the server's logs are the server's: a Connect client has no JVM to configure
    jvm = spark._jvm
    # FileFormatWriter logs the aborted job; Utils logs "Aborting task" with the task's stack
    # when the interrupt lands while it writes (longer batches make that likely); Executor logs
    # the interrupted task. Only silenced once a stop was asked for.
    for logger in ("org.apache.spark.sql.execution.datasources.FileFormatWriter",
                   "org.apache.spark.util.Utils", "org.apache.spark.executor.Executor"):
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
            logger, jvm.org.apache.logging.log4j.Level.OFF)


def _stop_on_signals(stop: threading.Event) -> dict:
    """SIGINT/SIGTERM set ``stop`` (the loop then calls query.stop()); a second SIGINT raises
    KeyboardInterrupt. Returns the previous handlers. Signals are main-thread only in Python."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def start_stream(spark, *, input_dir: str, model_dir: str | Path, out: str, checkpoint: str,
                 text_col: str = "text", pred_col: str = "prediction", model_col: str = "model_id",
                 trigger: str = "processing-time", interval: str = "10 seconds",
                 max_files_per_trigger: int | None = None, schema: str | None = None,
                 batch_size: int = 256, device: str = "auto", precision: str = "auto",
                 allow_model_change: bool = False,
                 log: Callable[[str], None] | None = None) -> ScoringStream:
    """Start the streaming scoring query (non-blocking); see :func:`score_stream`.

    Example
    -------
    >>> stream = start_stream(spark, input_dir="in/", model_dir="model/", out="scored/",
    ...                       checkpoint="ckpt/")              # doctest: +SKIP
    >>> stream.query.status; stream.query.stop()              # doctest: +SKIP
    """
    from pyspark.sql import functions as F

    from .scoring import classify_udf, with_prediction
    from .session import is_connect
    from .tables import first_line, spark_errors

    log = log or (lambda message: None)
    if trigger not in TRIGGERS:
        raise SparklstmError(f"trigger must be one of {', '.join(TRIGGERS)}, got {trigger!r}")
    if max_files_per_trigger is not None and max_files_per_trigger < 1:
        raise SparklstmError("max_files_per_trigger must be >= 1")
    source, sink, ckpt = (_Dir(spark, p) for p in (input_dir, out, checkpoint))
    # Under Spark Connect a streaming query's tasks do not see session artifacts (shipping.py).
    classify = classify_udf(spark, model_dir, batch_size=batch_size, device=device,
                            precision=precision, ship="closure" if is_connect(spark) else "auto")
    pin = _check_pin(ckpt, classify.model_id, allow_model_change)
    _check_output(sink, ckpt)
    reader = spark.readStream.format("parquet")
    if max_files_per_trigger is not None:
        reader = reader.option("maxFilesPerTrigger", max_files_per_trigger)
    if schema is None:
        reader = reader.schema(_schema_of(spark, source))
    else:
        if not source.exists():
            raise SparklstmError(f"input directory not found: {input_dir}")
        try:
            reader = reader.schema(schema)
        except spark_errors() as e:
            raise SparklstmError(f"invalid schema {schema!r}: {first_line(e)}") from None
    try:
        scored = with_prediction(reader.load(str(input_dir)), classify, text_col=text_col,
                                 pred_col=pred_col, source=str(input_dir))
    except spark_errors() as e:
        raise SparklstmError(f"cannot read {input_dir}: {first_line(e)}") from None
    if model_col in scored.columns:
        raise SparklstmError(f"input already has a column named {model_col!r}")
    scored = scored.withColumn(model_col, F.lit(classify.model_id))
    writer = (scored.writeStream.format("parquet").outputMode("append")
              .option("path", str(out)).option("checkpointLocation", str(checkpoint)))
    try:
        writer = writer.trigger(availableNow=True) if trigger == "available-now" else \
            writer.trigger(processingTime=interval)
    except (*spark_errors(), ValueError) as e:
        raise SparklstmError(f"invalid interval {interval!r}: {first_line(e)}") from None
    _write_pin(ckpt, pin, classify.model_id, model_dir, classify.labels)
    log(f"model {classify.model_id} ({model_dir}), pinned in {checkpoint}/{PIN_FILE}")
    try:
        query = writer.start()
    except spark_errors() as e:
        raise SparklstmError(f"cannot start the streaming query: {first_line(e)}") from None
    log(f"streaming {input_dir} -> {out} ({trigger}"
        f"{' every ' + interval if trigger == 'processing-time' else ''}), checkpoint {checkpoint}")
    return ScoringStream(query=query, model_id=classify.model_id, spark=spark)


def score_stream(spark, *, log: Callable[[str], None] | None = None, **options) -> StreamSummary:
    """Score new Parquet files of ``input_dir`` as they arrive; block until done or stopped.

    Writes every input column plus ``pred_col`` (the :func:`~sparklstm.spark.scoring.classify_udf`
    struct) and ``model_col`` (the model's sha256) to ``out`` through the Parquet file sink, with
    ``checkpoint`` as the query's checkpoint location. Options are those of :func:`start_stream`:
    ``trigger`` ``"processing-time"`` (a micro-batch every ``interval``, until Ctrl-C or SIGTERM)
    or ``"available-now"`` (what is there now, then stop); ``max_files_per_trigger``; ``schema``
    (a DDL string; default: the schema of the files already in ``input_dir``);
    ``allow_model_change`` (resume a checkpoint that another model started). Files must appear
    in ``input_dir`` whole (write elsewhere, then rename in).

    Example
    -------
    >>> score_stream(spark, input_dir="incoming/", model_dir="model/", out="scored/",
    ...              checkpoint="ckpt/", trigger="available-now", log=print)   # doctest: +SKIP
    StreamSummary(model_id='3f1c...', batches=2, rows=5000, stopped=False)
    """
    return start_stream(spark, log=log, **options).run(log=log)


class _Dir:
    """A directory on any Hadoop filesystem (local, HDFS, S3, ...), read and written through
    Spark's own data sources, so it works alike on a classic session and on Spark Connect (which
    has no JVM handle): checkpoints and outputs usually live on a cluster filesystem, not on the
    driver's disk. Entries whose names start with ``_`` or ``.`` are hidden, as Spark hides them.
    """

    def __init__(self, spark, path):
        self.spark = spark
        self.path = str(path).rstrip("/")

    def _child(self, name: str) -> str:
        return f"{self.path}/{name}" if name else self.path

    def _files(self, name: str = ""):
        """binaryFile over a file or a directory: one row per (non-hidden) file, lazily."""
        return self.spark.read.format("binaryFile").load(self._child(name))

    def exists(self, name: str = "") -> bool:
        from pyspark.errors import AnalysisException

        try:
            self._files(name).schema  # resolving the path fails when it does not exist
            return True
        except AnalysisException as e:
            if "PATH_NOT_FOUND" in str(e) or "Path does not exist" in str(e):
                return False
            raise

    def names(self, name: str = "") -> list[str]:
        """Files in the directory (or in its subdirectory ``name``); [] if it does not exist."""
        if not self.exists(name):
            return []
        return sorted({r["path"].rstrip("/").rsplit("/", 1)[-1]
                       for r in self._files(name).select("path").collect()})

    def read(self, name: str) -> str:
        """A file's text, or the text of the one data file of a directory that :meth:`write` made."""
        rows = self._files(name).select("content").collect()
        return "".join(bytes(r["content"]).decode("utf-8") for r in rows)

    def write(self, name: str, text: str) -> None:
        # The DataFrame writer makes a directory holding one part file. Overwrite is delete, then
        # write: a crash between leaves no pin, and a restart then refuses to guess the model.
        (self.spark.createDataFrame([(text,)], "value string").coalesce(1)
         .write.mode("overwrite").text(self._child(name)))


def _data_files(names: list[str]) -> list[str]:
    return [n for n in names if not n.startswith(("_", "."))]


def _schema_of(spark, source: _Dir):
    """The schema of the Parquet files already in the input directory."""
    from .tables import first_line, spark_errors

    where = str(source.path)
    if not source.exists():
        raise SparklstmError(f"input directory not found: {where}")
    if not _data_files(source.names()):
        raise SparklstmError(f"input directory {where} has no Parquet files to take the schema from;"
                             " pass --schema, e.g. 'id BIGINT, text STRING'")
    try:
        return spark.read.parquet(where).schema
    except spark_errors() as e:
        raise SparklstmError(f"cannot read the schema of {where}: {first_line(e)}") from None


def _check_pin(ckpt: _Dir, model_id: str, allow_change: bool) -> dict | None:
    """The checkpoint's pin (None on a fresh checkpoint); refuses another model unless allowed."""
    if not ckpt.exists(PIN_FILE):
        if _data_files(ckpt.names("offsets")) and not allow_change:
            raise SparklstmError(f"checkpoint {ckpt.path} has progress but no {PIN_FILE}, so the model"
                                 " that started it is unknown; pass --allow-model-change to resume it")
        return None
    try:
        pin = json.loads(ckpt.read(PIN_FILE))
        pinned = pin["model_id"]
    except (ValueError, KeyError, TypeError):
        raise SparklstmError(f"{ckpt.path}/{PIN_FILE} is not a valid model pin") from None
    if pinned != model_id and not allow_change:
        raise SparklstmError(
            f"checkpoint {ckpt.path} was started with model {pinned[:12]}, not {model_id[:12]}: "
            "use a new --checkpoint and --out for a new model, or pass --allow-model-change")
    return pin


def _write_pin(ckpt: _Dir, pin: dict | None, model_id: str, model_dir, labels: list[str]) -> None:
    """Record the model in the checkpoint; a change (allowed) keeps the earlier models in history."""
    if pin is not None and pin["model_id"] == model_id:
        return
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    history = [] if pin is None else pin.get("history", []) + [
        {k: pin.get(k) for k in ("model_id", "model_dir", "labels", "pinned_at")}]
    ckpt.write(PIN_FILE, json.dumps({"model_id": model_id, "model_dir": str(model_dir),
                                     "labels": list(labels), "pinned_at": now,
                                     "history": history}, indent=2))


def _check_output(sink: _Dir, ckpt: _Dir) -> None:
    """Refuse an output that a fresh checkpoint would corrupt.

    The file sink skips every batch whose id its ``_spark_metadata`` log already holds, so a new
    query (batch ids from 0) writing into another query's output would silently drop rows; and
    plain Parquet files in the output would be hidden by the log it starts.
    """
    fresh = not _data_files(ckpt.names("offsets"))
    if not fresh or not sink.exists():
        return
    if sink.exists("_spark_metadata"):
        raise SparklstmError(f"output {sink.path} belongs to another streaming query (it has a "
                             "_spark_metadata log); a new checkpoint needs a new --out")
    if _data_files(sink.names()):
        raise SparklstmError(f"output {sink.path} exists and is not a streaming output; pass a new --out")
