"""The Spark scoring UDF: broadcast model, one copy per Python worker, batched, GPU-aware.

``classify_udf(spark, model_dir)`` verifies the model on the driver, ships the model directory's
bytes to the executors (a broadcast; a session artifact on Spark Connect: ``shipping.py``; so
executors need no shared filesystem), and returns a column function::

    df.withColumn("pred", classify_udf(spark, "model/")("text"))

Inside each Python worker the model is decoded once and cached by (model sha256, device), so a
reused worker never reloads it; rows are scored in length-sorted batches by the same
:class:`~sparklstm.predictor.Predictor` that ``sparklstm predict`` uses.
"""

import os
from pathlib import Path
from typing import Iterator

import pandas as pd

from ..artifact import model_from_files, read_model_files
from ..device import resolve_device, task_gpu_device
from ..errors import SparklstmError
from ..predictor import PRECISIONS
from .shipping import SHIPS, ship_model
from .workers import check_workers

# precision: what scored the row (fp32, bf16 or int8), so a fleet of mixed hardware under
# precision="auto" is visible in the output.
RESULT_TYPE = ("struct<label: string, probability: double, probabilities: array<double>, "
               "precision: string>")

# Per Python worker process: (model sha256, device, precision) -> Predictor. A reused worker keeps it.
_PREDICTORS: dict = {}
# How many times this worker process decoded a model (the scale tests read it per worker).
LOAD_COUNT = {"n": 0}


def _task_device(requested: str) -> str:
    """The task's GPU if Spark assigned one; else CUDA if asked for; else CPU."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if requested in ("auto", "cuda") and ctx is not None:
        gpus = ctx.resources().get("gpu")
        if gpus is not None and gpus.addresses:
            return task_gpu_device(list(gpus.addresses))
    if requested == "auto":
        return "cpu"
    return resolve_device(requested)


def _predictor(shipped, model_id: str, device: str, batch_size: int, precision: str):
    from ..device import auto_precision
    from ..predictor import Predictor

    precision = auto_precision(precision, device)  # auto follows this task's device
    key = (model_id, device, precision)
    predictor = _PREDICTORS.get(key)
    if predictor is None:
        predictor = Predictor(model_from_files(shipped.value), device=device, batch_size=batch_size,
                              precision=precision)
        _PREDICTORS[key] = predictor
        LOAD_COUNT["n"] += 1
        if os.environ.get("SPARKLSTM_LOAD_LOG"):
            # One line per model load, for the tests that count loads per Python worker.
            with open(os.environ["SPARKLSTM_LOAD_LOG"], "a") as f:
                f.write(f"{os.getpid()} {model_id} {device}\n")
    predictor.batch_size = batch_size
    return predictor


def _set_threads() -> None:
    """torch threads = the task's cores (spark.task.cpus), so tasks don't oversubscribe."""
    import torch
    from pyspark import TaskContext

    ctx = TaskContext.get()
    cpus = ctx.cpus() if ctx is not None else 1
    if torch.get_num_threads() != cpus:
        torch.set_num_threads(max(1, cpus))


def _results(predictor, texts: pd.Series, explain: int = 0, explain_method: str = "ig") -> pd.DataFrame:
    valid, label_idx, probs = predictor.predict_arrays(texts.tolist())
    labels = predictor.labels
    columns = {
        "label": [labels[k] if ok else None for ok, k in zip(valid, label_idx)],
        "probability": [float(p[k]) if ok else None for ok, k, p in zip(valid, label_idx, probs)],
        "probabilities": [p.tolist() if ok else None for ok, p in zip(valid, probs)],
        "precision": [predictor.precision if ok else None for ok in valid],
    }
    if explain:
        from ..explain.attribution import explain_batch

        top = explain_batch(predictor, texts.tolist(), k=explain, method=explain_method)
        columns["explanation"] = [
            None if t is None else [{"token": tok, "attribution": float(a)} for tok, a in t]
            for t in top
        ]
    return pd.DataFrame(columns)


def _rebatch(batches: Iterator[pd.Series], buffer_rows: int) -> Iterator[list[pd.Series]]:
    """Group consecutive Arrow batches until ``buffer_rows`` rows, so length sorting and model
    batches span Arrow batch boundaries; yields each group's batches in input order."""
    group, rows = [], 0
    for batch in batches:
        group.append(batch)
        rows += len(batch)
        if rows >= buffer_rows:
            yield group
            group, rows = [], 0
    if group:
        yield group


def classify_udf(spark, model_dir: str | Path, *, batch_size: int = 256, device: str = "auto",
                 precision: str = "auto", buffer_rows: int | None = None, explain: int = 0,
                 explain_method: str = "ig", ship: str = "auto"):
    """A pandas UDF that classifies a string column.

    Returns a function of a column (name or Column) giving
    ``struct<label: string, probability: double, probabilities: array<double>, precision: string>``,
    null where the text is null, empty or has no tokens. ``probabilities`` follow the model's label order.
    The raw pandas UDF is ``.udf`` (for ``spark.udf.register``).

    ``precision``: ``auto`` (default: ``bf16`` where it is faster than fp32, measured once per
    worker on a CPU, else ``fp32``; ``device.auto_precision``), ``fp32``, ``bf16`` (autocast's),
    ``int8`` (dynamic quantization, CPU); the struct's ``precision`` says which scored the row.
    ``buffer_rows``: rows gathered across
    Arrow batches before length-sorting them into model batches (default ``max(4 * batch_size,
    1024)``). ``explain=k`` adds ``explanation: array<struct<token, attribution>>``, the top-k
    tokens for the predicted class (integrated gradients, or ``explain_method="occlusion"``);
    it costs hundreds of times a prediction (README, "Explain at scale").

    ``ship``: how the model reaches the Python workers. ``auto``: a broadcast on a classic
    session, a session artifact (sent once) on Spark Connect; ``closure``: inside the UDF, which
    a streaming DataFrame needs under Spark Connect (its tasks do not see session artifacts).

    Example
    -------
    >>> classify = classify_udf(spark, "model/")                       # doctest: +SKIP
    >>> df.withColumn("pred", classify("text")).select("pred.label")   # doctest: +SKIP
    """
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    if batch_size < 1:
        raise SparklstmError("batch_size must be >= 1")
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise SparklstmError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if precision not in PRECISIONS:
        raise SparklstmError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if explain < 0 or explain_method not in ("ig", "occlusion"):
        raise SparklstmError("explain must be >= 0 and explain_method ig or occlusion")
    if ship not in SHIPS:
        raise SparklstmError(f"ship must be one of {SHIPS}, got {ship!r}")
    files = read_model_files(model_dir)
    artifact = model_from_files(files, source=str(model_dir))  # fail on the driver, not in tasks
    model_id = artifact.model_id
    check_workers(spark)  # one line if the Python workers cannot import sparklstm
    shipped = ship_model(spark, files, ship=ship)
    buffer_rows = buffer_rows or max(4 * batch_size, 1024)

    result_type = RESULT_TYPE if not explain else (
        RESULT_TYPE[:-1] + ", explanation: array<struct<token: string, attribution: double>>>")

    @pandas_udf(result_type)
    def classify(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        _set_threads()
        predictor = _predictor(shipped, model_id, _task_device(device), batch_size, precision)
        for group in _rebatch(batches, buffer_rows):
            scored = _results(predictor, pd.concat(group, ignore_index=True), explain, explain_method)
            start = 0
            for batch in group:  # one output per input batch, same rows, same order
                yield scored.iloc[start : start + len(batch)].reset_index(drop=True)
                start += len(batch)

    def apply(column):
        # collate() takes strings only (no implicit cast), so a number or binary column is an
        # AnalysisException when the plan is built, not silent null or digit predictions.
        # make_valid_utf8: invalid UTF-8 bytes in a string column would crash the Arrow
        # conversion in the Python worker; they become U+FFFD, as a decoder with errors=replace.
        column = F.make_valid_utf8(F.collate(column, "UTF8_BINARY"))
        result = classify(column)
        # A pandas UDF can't return a null struct, only a struct of nulls; make it a null struct.
        return F.when(result["label"].isNull(), F.lit(None)).otherwise(result)

    apply.udf = classify
    apply.model_id = model_id
    apply.labels = artifact.labels
    return apply


def score(spark, *, input_path: str, model_dir: str | Path, out: str, text_col: str = "text",
          pred_col: str = "prediction", batch_size: int = 256, device: str = "auto",
          precision: str = "auto", fmt: str | None = None, overwrite: bool = False) -> int:
    """Score a table and write Parquet with every input column plus ``pred_col``; returns rows.

    Example
    -------
    >>> score(spark, input_path="mail/", model_dir="model/", out="scored/")   # doctest: +SKIP
    """

    from .tables import first_line, read_table, spark_errors

    classify = classify_udf(spark, model_dir, batch_size=batch_size, device=device,
                            precision=precision)
    df = read_table(spark, input_path, fmt=fmt)
    scored = with_prediction(df, classify, text_col=text_col, pred_col=pred_col,
                             source=str(input_path))
    _check_output(out, overwrite)
    try:
        scored.write.mode("overwrite" if overwrite else "error").parquet(str(out))
        # Parquet footers hold row counts, so this reads no data.
        return spark.read.parquet(str(out)).count()
    except spark_errors() as e:
        raise SparklstmError(f"scoring failed: {first_line(e)}") from None


def with_prediction(df, classify, *, text_col: str, pred_col: str, source: str):
    """``df`` plus ``pred_col = classify(text_col)``, after checking the columns; the one place
    batch ``score`` and streaming ``score_stream`` build their output (a lazy plan either way)."""
    from .tables import require_columns

    require_columns(df, {text_col: "text"}, source=source)
    if pred_col in df.columns:
        raise SparklstmError(f"input already has a column named {pred_col!r}; pass another --pred-col")
    return df.withColumn(pred_col, classify(text_col))


def _check_output(out: str, overwrite: bool) -> None:
    path = Path(str(out).removeprefix("file:"))
    if "://" not in str(out) and path.exists() and not overwrite:
        raise SparklstmError(f"output {out} exists (pass --overwrite to replace it)")
