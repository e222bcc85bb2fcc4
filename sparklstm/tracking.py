"""A training run logged to MLflow: ``train(..., mlflow=True)`` / ``sparklstm train --mlflow``.

What a run holds: the settings as params (``model.*``, ``train.*``, device, precision, the
prepped data's hash and path), each epoch's history row as metrics with ``step`` = the epoch,
the final validation and test metrics (``final_*``, computed with the best epoch's weights),
``training_curves.png``, the model directory under ``model_dir/``, and the pyfunc model that
``sparklstm.mlflow.log_model`` logs.

The run goes where MLflow's own settings point (``MLFLOW_TRACKING_URI``; unset, MLflow 3's
default is ``./mlflow.db`` with artifacts in ``./mlruns``, which needs no server). A run the
caller has started is logged into and left open; otherwise one is started and ended (FAILED if
training raises). Only ``training/loop.py`` imports this module, and only when asked, so MLflow
stays an optional dependency.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Callable, Iterator

from .errors import SparklstmError
from .mlflow import first_line, log_model, require_mlflow


def flatten(settings: dict, prefix: str = "") -> dict:
    """``{"model": {"cell": "lstm"}}`` -> ``{"model.cell": "lstm"}``: MLflow params are flat."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def metric_name(text: str) -> str:
    """A label as part of a metric name: MLflow allows letters, digits and ``_-. /:`` only."""
    return re.sub(r"[^\w\-. /:]", "_", text)


def final_metrics(metrics: dict) -> dict[str, float]:
    """The scalar results of metrics.json: per split accuracy, macro-F1 and per-class F1, then
    the best epoch and the throughput."""
    final = {}
    for split in ("val", "test"):
        report = metrics.get(split)
        if not report:  # an empty split has no report
            continue
        final[f"final_{split}_accuracy"] = report["accuracy"]
        final[f"final_{split}_macro_f1"] = report["macro_f1"]
        for label, scores in report["per_class"].items():
            final[f"final_{split}_f1_{metric_name(label)}"] = scores["f1"]
    final |= {name: metrics[name] for name in ("best_epoch", "train_seconds", "train_tokens_per_s")}
    if "wide" in metrics:
        final["wide_mix"] = metrics["wide"]["mix"]
    return final


class TrainingRun:
    """The hooks the training loop calls: ``started`` once, ``epoch`` after each epoch,
    ``finished`` when the model directory is written."""

    def __init__(self, mlflow, run_id: str, log: Callable[[str], None]):
        self.mlflow, self.run_id, self.log = mlflow, run_id, log
        self.logged_epochs: set[int] = set()

    def started(self, settings: dict, *, prepped: str | Path) -> None:
        self.mlflow.log_params(flatten(settings) | {"prepped": str(prepped)}, run_id=self.run_id)

    def epoch(self, row: dict) -> None:
        step = row["epoch"]
        values = {key: float(value) for key, value in row.items() if key != "epoch"}
        self.mlflow.log_metrics(values, step=step, run_id=self.run_id)
        self.logged_epochs.add(step)

    def finished(self, *, out: str | Path, metrics: dict, curves: str) -> None:
        # A resumed run's earlier epochs happened before this run started: logged here.
        for row in metrics["history"]:
            if row["epoch"] not in self.logged_epochs:
                self.epoch(row)
        out = Path(out)
        self.mlflow.log_artifact(str(out / curves), run_id=self.run_id)
        self.mlflow.log_artifacts(str(out), artifact_path="model_dir", run_id=self.run_id)
        info = log_model(out)  # into this run, the active one
        # Linked to the logged model too, so its page in the UI shows how it scored.
        self.mlflow.log_metrics(final_metrics(metrics), run_id=self.run_id, model_id=info.model_id)
        self.log(f"MLflow: run {self.run_id}, model {info.model_uri}, at {self.mlflow.get_tracking_uri()}")


@contextlib.contextmanager
def training_run(*, experiment: str | None, log: Callable[[str], None]) -> Iterator[TrainingRun]:
    """The active MLflow run, or a new one in ``experiment`` (MLflow's active experiment if None)
    that ends with the block. Started before training, so that a tracking server that cannot be
    reached fails the command at once, not after the epochs."""
    mlflow = require_mlflow("--mlflow")
    from mlflow.exceptions import MlflowException

    active = mlflow.active_run()
    uri = mlflow.get_tracking_uri()
    run = None
    if active is None:
        try:
            # No mlflow.set_experiment: it would change the caller's active experiment for good.
            experiment_id = None
            if experiment is not None:
                found = mlflow.get_experiment_by_name(experiment)
                experiment_id = found.experiment_id if found else mlflow.create_experiment(experiment)
            run = mlflow.start_run(experiment_id=experiment_id)
        except MlflowException as e:
            raise SparklstmError(f"MLflow tracking at {uri}: {first_line(e)}") from None
    elif experiment is not None:
        name = mlflow.get_experiment(active.info.experiment_id).name
        if name != experiment:
            raise SparklstmError(f"an MLflow run is active in experiment {name!r}; end it to "
                                 f"log into {experiment!r}")
    # Ends a run started here: FINISHED, or FAILED if the block raises. A caller's run stays open.
    with run if run is not None else contextlib.nullcontext():
        try:
            yield TrainingRun(mlflow, (run if run is not None else active).info.run_id, log)
        except MlflowException as e:
            raise SparklstmError(f"logging to MLflow at {uri} failed: {first_line(e)}") from None
