"""A sparklstm model as an MLflow pyfunc, logged as *models from code*.

``sparklstm.mlflow.log_model`` passes this file's path as ``python_model``: MLflow copies the
file into the logged model and runs it when the model loads, and ``set_model`` below hands it the
instance. So nothing is pickled (no ``python_model.pkl``): the logged model holds this source,
the model directory (safetensors weights and JSON) as the artifact ``model_dir``, and
``MLmodel``. Scoring goes through sparklstm's own ``Predictor``, so a pyfunc answers exactly as
``sparklstm predict`` and the Spark UDF do.

Run by MLflow as a module of its own (not as part of the package), hence absolute imports only.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

# Must match sparklstm/mlflow.py (ARTIFACT); a test logs and loads a model through both.
ARTIFACT = "model_dir"
DEFAULTS = {"device": "auto", "batch_size": 256, "precision": "auto"}  # those of `sparklstm predict`


def texts_of(model_input) -> list:
    """The texts of what ``predict`` may receive: a DataFrame (its ``text`` column, else its
    first), a Series, a list of strings or one string."""
    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        return model_input[column].tolist()
    if isinstance(model_input, pd.Series):
        return model_input.tolist()
    if isinstance(model_input, str):
        return [model_input]
    return list(model_input)


class SparklstmModel(PythonModel):
    """Texts in; ``label``, ``probability``, ``probabilities`` out (the UDF's struct fields),
    all null for a null, empty or whitespace-only text."""

    def load_context(self, context):
        from sparklstm.device import resolve_device
        from sparklstm.predictor import Predictor

        # Loaded once per process (per Spark Python worker under spark_udf), with the defaults
        # changed by the model_config given at logging or to load_model(model_config=...).
        config = DEFAULTS | (context.model_config or {})
        self.predictor = Predictor.from_dir(
            context.artifacts[ARTIFACT], device=resolve_device(config["device"]),
            batch_size=int(config["batch_size"]), precision=config["precision"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        valid, label_idx, probs = self.predictor.predict_arrays(texts_of(model_input))
        labels = self.predictor.labels
        return pd.DataFrame({
            "label": [labels[k] if ok else None for ok, k in zip(valid, label_idx)],
            "probability": [float(p[k]) if ok else None for ok, k, p in zip(valid, label_idx, probs)],
            "probabilities": [p.tolist() if ok else None for ok, p in zip(valid, probs)],
        })


mlflow.models.set_model(SparklstmModel())
