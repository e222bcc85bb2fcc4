"""Evaluate scored Parquet with Spark aggregations: only the confusion matrix reaches the driver."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import SparklstmError
from ..metrics import report


def evaluate_scored(spark, *, scored: str, label_col: str = "label", pred_col: str = "prediction",
                    out: str | Path | None = None, model_dir: str | Path | None = None,
                    plots: bool = True) -> dict:
    """Accuracy, macro-F1, per-class scores and confusion matrix of a scored table.

    Rows whose prediction is null (null or empty text) are counted as ``unscored`` and left out
    of the metrics. With ``model_dir``, the classes are the model's labels (in its order), and a
    true label the model does not know is an error. With ``out``, the JSON report is written
    there and (``plots``) two PNGs beside it: ``<stem>.confusion.png`` (normalised per true
    class) and ``<stem>.f1.png``.

    Example
    -------
    >>> evaluate_scored(spark, scored="scored/", label_col="label")["macro_f1"]   # doctest: +SKIP
    0.97
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructType

    from .tables import first_line, read_table, require_columns, spark_errors

    df = read_table(spark, scored, fmt=None)
    require_columns(df, {label_col: "label", pred_col: "prediction"}, source=str(scored))
    pred_type = df.schema[pred_col].dataType
    if not isinstance(pred_type, StructType) or "label" not in pred_type.fieldNames():
        raise SparklstmError(f"column {pred_col!r} in {scored} is not a sparklstm prediction struct")
    try:
        cells = (
            df.select(F.col(label_col).cast("string").alias("y"), F.col(pred_col)["label"].alias("p"))
            .groupBy("y", "p").count().collect()
        )
    except spark_errors() as e:
        raise SparklstmError(f"evaluate failed: {first_line(e)}") from None
    unscored = sum(r["count"] for r in cells if r["p"] is None)
    unlabelled = sum(r["count"] for r in cells if r["y"] is None and r["p"] is not None)
    cells = [r for r in cells if r["p"] is not None and r["y"] is not None]
    if not cells:
        raise SparklstmError(f"{scored} has no rows with both a label and a prediction")
    labels = sorted({r["y"] for r in cells} | {r["p"] for r in cells})
    if model_dir is not None:
        labels = _known_labels(model_dir, cells)
    index = {label: k for k, label in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for r in cells:
        cm[index[r["y"]], index[r["p"]]] += r["count"]
    result = report(cm, labels)
    result.update({"unscored": unscored, "unlabelled": unlabelled, "scored": str(scored)})
    if out is not None:
        if plots:
            result["plots"] = _write_plots(result, Path(out))
        Path(out).write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return result


def _known_labels(model_dir: str | Path, cells: list) -> list[str]:
    """The model's labels; a true or predicted label outside them is an error."""
    from ..artifact import read_config

    config = read_config(model_dir)
    labels = [str(label) for label in config["labels"]]
    for side, name in (("y", "true labels"), ("p", "predicted labels")):
        unknown = sorted({r[side] for r in cells} - set(labels))
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise SparklstmError(f"{len(unknown)} {name} are not labels of the model in {model_dir}: "
                                 f"{shown} (the model knows {', '.join(map(repr, labels))})")
    return labels


def _write_plots(result: dict, out: Path) -> dict:
    from ..plots import confusion_matrix, f1_bars

    stem = out.with_suffix("") if out.suffix == ".json" else out
    paths = {"confusion": Path(f"{stem}.confusion.png"), "f1": Path(f"{stem}.f1.png")}
    confusion_matrix(result["confusion_matrix"], result["labels"], out=paths["confusion"])
    f1_bars(result["per_class"], macro_f1=result["macro_f1"], out=paths["f1"])
    return {k: str(v) for k, v in paths.items()}
