"""sparklstm: LSTM text classification for Spark data workflows.

``prep`` (Spark) -> ``train`` (PyTorch, one node) -> ``classify_udf`` / ``score`` (Spark pandas UDF).
Heavy modules (torch, pyspark) are imported lazily so ``import sparklstm`` stays cheap.
"""

__version__ = "0.1.0"

__all__ = ["classify_udf", "prep", "train", "score", "evaluate_scored", "Predictor", "__version__"]


def __getattr__(name):  # PEP 562: import on first use, not at package import
    if name == "classify_udf":
        from .spark.scoring import classify_udf

        return classify_udf
    if name == "score":
        from .spark.scoring import score

        return score
    if name == "prep":
        from .spark.prep import prep

        return prep
    if name == "train":
        from .training.loop import train

        return train
    if name == "evaluate_scored":
        from .spark.evaluate import evaluate_scored

        return evaluate_scored
    if name == "Predictor":
        from .predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'sparklstm' has no attribute {name!r}")
