"""The Spark ML stages: a real Pipeline (with Spark's own StringIndexer beside ours) is fitted,
transforms, saves and loads, and predicts exactly what classify_udf predicts; TrainValidationSplit
tunes it; bad settings are one clear error."""

from __future__ import annotations

import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.evaluation import MulticlassClassificationEvaluator
from pyspark.ml.feature import StringIndexer
from pyspark.ml.tuning import ParamGridBuilder, TrainValidationSplit, TrainValidationSplitModel

from conftest import make_corpus
from sparklstm import classify_udf
from sparklstm.errors import SparklstmError
from sparklstm.ml import LSTMTextClassificationModel, LSTMTextClassifier

TINY = dict(epochs=2, embedDim=16, hiddenSize=16, minFreq=1, maxLen=48, numThreads=1, batchSize=32)


@pytest.fixture(scope="module")
def frames(spark):
    rows = make_corpus(600, seed=3)
    df = spark.createDataFrame(rows).withColumnRenamed("text", "body")
    train, test = df.randomSplit([0.8, 0.2], seed=1)
    test = test.unionByName(spark.createDataFrame([(None, "food"), ("", "tech")], "body string, label string"))
    return train, test


@pytest.fixture(scope="module")
def fitted(frames):
    train, _ = frames
    clf = LSTMTextClassifier(textCol="body", predictionCol="pred", **TINY)
    return Pipeline(stages=[clf]).fit(train)


def test_pipeline_fits_transforms_saves_loads_and_equals_classify_udf(spark, frames, fitted, tmp_path):
    _, test = frames
    stage = fitted.stages[0]
    assert isinstance(stage, LSTMTextClassificationModel)
    assert stage.metrics["val"]["macro_f1"] > 0.9  # separable corpus
    got = {r["body"]: r["pred"] for r in fitted.transform(test).collect()}

    classify = classify_udf(spark, stage.getOrDefault("modelDir"))  # the defaults, as the stage's
    want = {r["body"]: r["pred"] for r in test.withColumn("pred", classify("body")).collect()}
    assert got == want and got[None] is None and got[""] is None

    fitted.write().overwrite().save(str(tmp_path / "pipeline"))
    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    model_dir = loaded.stages[0].getOrDefault("modelDir")
    assert model_dir.startswith(str(tmp_path / "pipeline"))  # the model directory is inside
    again = {r["body"]: r["pred"] for r in loaded.transform(test).collect()}
    assert again == got
    assert loaded.stages[0].getOrDefault("textCol") == "body"


def test_estimator_params_round_trip_and_mirror_the_config(tmp_path):
    clf = LSTMTextClassifier(textCol="body", hiddenSize=48, cell="gru", lr=1e-3, valFraction=0.2)
    config = clf.config()
    assert (config.model.hidden_size, config.model.cell, config.train.lr) == (48, "gru", 1e-3)
    assert (config.prep.text_col, config.prep.val_fraction, config.prep.test_fraction) == ("body", 0.2, 0.0)
    assert config.train.epochs == 10 and config.model.wide  # the CLI's defaults
    clf.save(str(tmp_path / "clf"))
    loaded = LSTMTextClassifier.load(str(tmp_path / "clf"))
    assert loaded.config() == config and loaded.uid == clf.uid


def test_train_validation_split_over_a_pipeline_with_a_string_indexer(spark, frames):
    train, test = frames
    indexer = StringIndexer(inputCol="label", outputCol="y")
    clf = LSTMTextClassifier(textCol="body", labelCol="y", labelPredictionCol="y_hat", **TINY)
    grid = ParamGridBuilder().addGrid(clf.epochs, [1, 2]).build()
    evaluator = MulticlassClassificationEvaluator(labelCol="y", predictionCol="y_hat", metricName="f1")
    tvs = TrainValidationSplit(estimator=Pipeline(stages=[indexer, clf]), estimatorParamMaps=grid,
                               evaluator=evaluator, trainRatio=0.8, seed=0)
    best = tvs.fit(train)
    assert isinstance(best, TrainValidationSplitModel) and len(best.validationMetrics) == 2
    scored = best.transform(test.where("body <> ''"))
    assert dict(scored.dtypes)["y_hat"] == "double"
    assert evaluator.evaluate(scored) > 0.9


def test_bad_settings_and_columns_are_one_clear_error(spark, frames, fitted, tmp_path):
    train, _ = frames
    with pytest.raises(SparklstmError, match=r"\[model\] cell: 'xyz' is not one of"):
        LSTMTextClassifier(cell="xyz").fit(train)
    with pytest.raises(SparklstmError, match="text column 'text' not found in the DataFrame"):
        LSTMTextClassifier(**TINY).fit(train)
    with pytest.raises(SparklstmError, match="local .or mounted. paths"):
        fitted.stages[0].write().save("s3a://bucket/model")
    with pytest.raises(TypeError):
        LSTMTextClassifier(epochs="many")
