"""Spark ML Pipeline stages: :class:`LSTMTextClassifier` (Estimator) and its fitted
:class:`LSTMTextClassificationModel` (Transformer), persistable with ``save``/``load``.

``fit(df)`` runs the same prep and single-node training as ``sparklstm prep`` + ``sparklstm
train`` on the DataFrame's text and label columns, in the driver; ``transform(df)`` adds the
prediction struct with the same pandas UDF as :func:`~sparklstm.spark.scoring.classify_udf`. The
settings are Params generated from the config dataclasses (``conf/default.toml``'s keys in
camelCase: ``maxLen``, ``hiddenSize``, ``epochs``, ...), so the CLI, the TOML file and the stage
can never disagree on a name or a default::

    clf = LSTMTextClassifier(textCol="text", labelCol="label", epochs=5)
    model = Pipeline(stages=[clf]).fit(train_df)
    model.write().overwrite().save("pipeline/")     # the model directory is pipeline/.../model/
    PipelineModel.load("pipeline/").transform(df).select("prediction.label")
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path

from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import (DefaultParamsReadable, DefaultParamsReader, DefaultParamsWritable,
                             DefaultParamsWriter, MLReadable, MLReader, MLWritable, MLWriter)

from .config import Config, ModelConfig, PrepConfig, ScoreConfig, TrainConfig, apply_overrides
from .errors import SparklstmError

log = logging.getLogger("sparklstm.ml")

MODEL_SUBDIR = "model"  # where a saved LSTMTextClassificationModel keeps its model directory
# Directories fit() created; removed when the interpreter exits (save() copies what is kept).
_FIT_DIRS: list[str] = []
atexit.register(lambda: [shutil.rmtree(d, ignore_errors=True) for d in _FIT_DIRS])

_CONVERTERS = {bool: TypeConverters.toBoolean, int: TypeConverters.toInt,
               float: TypeConverters.toFloat, str: TypeConverters.toString}
# Config fields that are not Params: the columns have their own Params; no test split by default
# (the Pipeline's user holds out data; TrainValidationSplit splits on its own).
_SECTIONS = {"prep": (PrepConfig, {"text_col", "label_col"}), "model": (ModelConfig, set()),
             "train": (TrainConfig, set())}
_ESTIMATOR_DEFAULTS = {"test_fraction": 0.0}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _config_params() -> dict[str, tuple[str, str, object]]:
    """camelCase Param name -> (config section, key, default) for every prep/model/train setting."""
    out = {}
    for section, (cls, skip) in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.name not in skip:
                default = _ESTIMATOR_DEFAULTS.get(f.name, f.default)
                out[_camel(f.name)] = (section, f.name, default)
    return out


CONFIG_PARAMS = _config_params()


class _ScoringParams(Params):
    """The Params a fitted model scores with (shared by the estimator, which passes them on)."""

    textCol = Param(Params._dummy(), "textCol", "the text column (string)",
                    typeConverter=TypeConverters.toString)
    predictionCol = Param(Params._dummy(), "predictionCol",
                          "output: struct<label, probability, probabilities>",
                          typeConverter=TypeConverters.toString)
    labelPredictionCol = Param(
        Params._dummy(), "labelPredictionCol",
        "also output the predicted label alone, as the fitted label column's type ('' = no): "
        "what MulticlassClassificationEvaluator(predictionCol=...) reads",
        typeConverter=TypeConverters.toString)
    scoreBatchSize = Param(Params._dummy(), "scoreBatchSize", "rows per forward pass when scoring",
                           typeConverter=TypeConverters.toInt)
    scoreDevice = Param(Params._dummy(), "scoreDevice", "auto | cpu | cuda | cuda:N when scoring",
                        typeConverter=TypeConverters.toString)
    scorePrecision = Param(Params._dummy(), "scorePrecision", "fp32 | bf16 | int8 when scoring",
                           typeConverter=TypeConverters.toString)

    def _set_scoring_defaults(self) -> None:
        score = ScoreConfig()
        self._setDefault(textCol="text", predictionCol="prediction", labelPredictionCol="",
                         scoreBatchSize=score.batch_size, scoreDevice=score.device,
                         scorePrecision=score.precision)


class LSTMTextClassifier(Estimator, _ScoringParams, DefaultParamsReadable, DefaultParamsWritable):
    """Estimator: prep + training of the sparklstm model on ``textCol`` / ``labelCol``.

    Every prep, model and train setting of ``conf/default.toml`` is a Param of the same name in
    camelCase (``explainParams()`` lists them), with the same defaults except ``testFraction``
    (0: the data a Pipeline is fitted on is for training and validation). ``workDir`` (default: a
    temporary directory, removed at exit) holds prepped/ and the model directory; on a cluster it
    must be a path the driver and the executors share, as prep writes there from the executors.
    """

    labelCol = Param(Params._dummy(), "labelCol", "the label column (any type; compared as text)",
                     typeConverter=TypeConverters.toString)
    workDir = Param(Params._dummy(), "workDir", "where fit() writes prepped/ and model/ ('' = temp)",
                    typeConverter=TypeConverters.toString)

    def __init__(self, **kwargs):
        super().__init__()
        self._set_scoring_defaults()
        self._setDefault(labelCol="label", workDir="")
        self._setDefault(**{name: default for name, (_, _, default) in CONFIG_PARAMS.items()})
        self._set(**kwargs)

    def setParams(self, **kwargs):
        return self._set(**kwargs)

    def config(self) -> Config:
        """The prep/model/train configs these Params stand for (checked like a TOML file)."""
        overrides = {"prep": {"text_col": self.getOrDefault("textCol"),
                              "label_col": self.getOrDefault("labelCol")}, "model": {}, "train": {}}
        for name, (section, key, _) in CONFIG_PARAMS.items():
            overrides[section][key] = self.getOrDefault(name)
        return apply_overrides(Config(), overrides)

    def _fit(self, dataset):
        from .spark.prep import prep_dataframe
        from .training.loop import train

        config = self.config()
        work = self.getOrDefault("workDir") or _temp_dir()
        run = Path(tempfile.mkdtemp(prefix="fit-", dir=work))
        label_type = dataset.schema[config.prep.label_col].dataType.simpleString() \
            if config.prep.label_col in dataset.columns else "string"
        prep_dataframe(dataset, out=run / "prepped", config=config.prep, source="the DataFrame")
        metrics = train(prepped=run / "prepped", out=run / MODEL_SUBDIR, model_config=config.model,
                        train_config=config.train, progress=False, log=log.info)
        shutil.rmtree(run / "prepped", ignore_errors=True)  # derived data: the model is what stays
        model = LSTMTextClassificationModel(modelDir=str(run / MODEL_SUBDIR), labelType=label_type)
        model.metrics = metrics
        return self._copyValues(model)


# One Param per setting, generated so that a new config key is a new Param with nothing to add.
for _name, (_section, _key, _default) in CONFIG_PARAMS.items():
    setattr(LSTMTextClassifier, _name,
            Param(Params._dummy(), _name, f"{_section}.{_key} of conf/default.toml",
                  typeConverter=_CONVERTERS[type(_default)]))


class LSTMTextClassificationModel(Model, _ScoringParams, MLReadable, MLWritable):
    """Transformer: ``transform(df)`` adds ``predictionCol`` (null where the text is null or has
    no tokens), exactly as ``df.withColumn(predictionCol, classify_udf(spark, modelDir)(textCol))``.
    ``metrics`` holds the training metrics (val; test if testFraction > 0) after ``fit``."""

    modelDir = Param(Params._dummy(), "modelDir", "the sparklstm model directory",
                     typeConverter=TypeConverters.toString)
    labelType = Param(Params._dummy(), "labelType", "the fitted label column's Spark type",
                      typeConverter=TypeConverters.toString)

    def __init__(self, **kwargs):
        super().__init__()
        self._set_scoring_defaults()
        self._setDefault(labelType="string")
        self._set(**kwargs)
        self.metrics: dict | None = None

    def _transform(self, dataset):
        from pyspark.sql import functions as F

        from .spark.scoring import classify_udf, with_prediction

        classify = classify_udf(dataset.sparkSession, self.getOrDefault("modelDir"),
                                batch_size=self.getOrDefault("scoreBatchSize"),
                                device=self.getOrDefault("scoreDevice"),
                                precision=self.getOrDefault("scorePrecision"))
        pred_col = self.getOrDefault("predictionCol")
        out = with_prediction(dataset, classify, text_col=self.getOrDefault("textCol"),
                              pred_col=pred_col, source="the DataFrame")
        label_col = self.getOrDefault("labelPredictionCol")
        if label_col:
            out = out.withColumn(label_col,
                                 F.col(pred_col)["label"].cast(self.getOrDefault("labelType")))
        return out

    def write(self) -> MLWriter:
        return _ModelWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _ModelReader(cls)


class _ModelWriter(MLWriter):
    """Params as Spark ML metadata (``path/metadata``), plus the model directory (``path/model``)."""

    def __init__(self, instance: LSTMTextClassificationModel):
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        target = _local(path) / MODEL_SUBDIR
        # modelDir is where the model lives now; the saved copy knows its own place on load.
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sparkSession,
                                         paramMap=_params_without(self.instance, "modelDir"))
        shutil.copytree(self.instance.getOrDefault("modelDir"), target, dirs_exist_ok=True)


class _ModelReader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> LSTMTextClassificationModel:
        metadata = DefaultParamsReader.loadMetadata(path, self.sparkSession)
        model = self.cls()
        model._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(model, metadata)
        model._set(modelDir=str(_local(path) / MODEL_SUBDIR))
        return model


def _params_without(instance: Params, skip: str) -> dict:
    return {p.name: v for p, v in instance._paramMap.items() if p.name != skip}


def _local(path: str) -> Path:
    """The stage's save/load path on the driver's filesystem: the model directory is copied with
    Python file operations, so cloud storage must be mounted (e.g. /dbfs/..., /Volumes/...)."""
    if "://" in path and not path.startswith("file:"):
        raise SparklstmError(f"sparklstm's Spark ML stages save to and load from local (or "
                             f"mounted) paths, not {path}")
    return Path(path.removeprefix("file://").removeprefix("file:"))


def _temp_dir() -> str:
    path = tempfile.mkdtemp(prefix="sparklstm-ml-")
    _FIT_DIRS.append(path)
    return path


__all__ = ["LSTMTextClassifier", "LSTMTextClassificationModel"]
