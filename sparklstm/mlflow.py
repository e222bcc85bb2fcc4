"""A model directory as an MLflow model: a pyfunc that loads and scores with sparklstm.

::

    info = sparklstm.mlflow.log_model("model/", registered_model_name="spam")
    mlflow.pyfunc.load_model(info.model_uri).predict(pd.DataFrame({"text": ["win a cruise"]}))
    mlflow.pyfunc.spark_udf(spark, info.model_uri, result_type=RESULT_TYPE, env_manager="local")

The model is logged from code (``sparklstm/mlflow_pyfunc.py``), with the model directory as an
artifact: the weights stay safetensors and nothing is pickled. MLflow is an optional dependency
(``pip install 'sparklstm[mlflow]'``); ``import mlflow`` below is the real package (absolute
import), imported when a function runs so that this module imports without it.
"""

from __future__ import annotations

import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

from . import __version__
from .artifact import METRICS, model_from_files, read_model_files
from .errors import SparklstmError
from .predictor import PRECISIONS

PYFUNC = Path(__file__).with_name("mlflow_pyfunc.py")
ARTIFACT = "model_dir"  # the artifact key mlflow_pyfunc.py reads
# What spark_udf returns for the whole output; "string" gives the label alone.
RESULT_TYPE = "label string, probability double, probabilities array<double>"
INSTALL = "pip install 'sparklstm[mlflow]'"


def require_mlflow(feature: str):
    """The mlflow module, or one line naming the extra that installs it."""
    try:
        import mlflow
    except ModuleNotFoundError as e:
        if e.name != "mlflow":  # mlflow is there but one of its own dependencies is not
            raise
        raise SparklstmError(f"{feature} needs MLflow: {INSTALL}") from None
    return mlflow


def first_line(error: Exception) -> str:
    """An MLflow error as one line (its messages can run to a page of server response)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def signature():
    """One string column ``text`` in; the UDF's struct fields out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import Array

    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string, "text")]),
        outputs=Schema([ColSpec(DataType.string, "label"), ColSpec(DataType.double, "probability"),
                        ColSpec(Array(DataType.double), "probabilities")]))


def default_requirements() -> list[str]:
    """Given explicitly: inferring them loads the model in a subprocess (seconds). sparklstm
    brings its own dependencies; torch is pinned to the version the model was logged with."""
    requirements = [f"sparklstm=={__version__}"]
    try:
        requirements.append(f"torch=={version('torch').split('+')[0]}")  # no local tag (+cpu)
    except PackageNotFoundError:
        pass
    return requirements


def log_model(model_dir: str | Path, *, name: str = "model", registered_model_name: str | None = None,
              model_config: dict | None = None, pip_requirements: list[str] | None = None):
    """Log the model directory ``model_dir`` as a pyfunc model and return MLflow's ``ModelInfo``
    (``info.model_uri`` loads it).

    Logs into the active run if there is one, else into the active experiment with no run.
    ``registered_model_name`` also registers it (``models:/<name>/<version>``).
    ``model_config`` changes the scoring defaults ``device`` (auto), ``batch_size`` (256) and
    ``precision`` (fp32); so does ``load_model(uri, model_config=...)`` when it loads.
    ``pip_requirements`` replaces :func:`default_requirements` (e.g. a wheel's path or an
    internal index where sparklstm is not on PyPI).
    """
    mlflow = require_mlflow("sparklstm.mlflow.log_model")
    from mlflow.exceptions import MlflowException

    files = read_model_files(model_dir)  # one-line SparklstmError for a missing directory
    artifact = model_from_files(files, source=str(model_dir))  # ... or a tampered one
    config = scoring_config(model_config)
    metrics = Path(model_dir) / METRICS
    with tempfile.TemporaryDirectory(prefix="sparklstm-mlflow-") as tmp:
        # Only the files scoring reads travel with the model (no curves, no checkpoint), and
        # exactly the bytes verified above.
        staged = Path(tmp) / "model"
        staged.mkdir()
        for file, data in files.items():
            (staged / file).write_bytes(data)
        if metrics.is_file():
            shutil.copyfile(metrics, staged / METRICS)
        try:
            return mlflow.pyfunc.log_model(
                name=name, python_model=str(PYFUNC), artifacts={ARTIFACT: str(staged)},
                signature=signature(), model_config=config,
                # Shown in the UI and written as the serving example; MLflow also scores it once
                # at logging, so a model that cannot load fails here rather than when deployed.
                input_example=pd.DataFrame({"text": ["an example text"]}),
                pip_requirements=pip_requirements or default_requirements(),
                registered_model_name=registered_model_name,
                metadata={"sparklstm_version": __version__, "sparklstm_model_id": artifact.model_id,
                          "labels": artifact.labels})
        except MlflowException as e:
            raise SparklstmError(f"logging {model_dir} to MLflow at {mlflow.get_tracking_uri()} "
                                 f"failed: {first_line(e)}") from None


def scoring_config(config: dict | None) -> dict | None:
    """``model_config`` checked; None stays None, so that the run's params don't get the keys
    (MLflow logs a model config as params of the active run, where ``device`` is taken)."""
    if not config:
        return None
    unknown = sorted(set(config) - {"device", "batch_size", "precision"})
    if unknown:
        raise SparklstmError(f"model_config takes device, batch_size and precision, not {', '.join(unknown)}")
    if config.get("precision", "fp32") not in PRECISIONS:
        raise SparklstmError(f"model_config precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {config['precision']!r}")
    batch_size = config.get("batch_size", 1)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise SparklstmError(f"model_config batch_size must be an integer >= 1, got {batch_size!r}")
    return dict(config)
