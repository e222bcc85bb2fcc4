"""PNG figures: the training curves train() writes, the evaluate PNGs, a 20-class confusion plot.

Each image is decoded (matplotlib.image.imread) and its pixel size checked against the size the
figure was made at; values are checked where a picture has them (the normalised cells' colours).
"""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pytest

from conftest import make_corpus
from sparklstm import classify_udf, plots
from sparklstm.errors import SparklstmError
from sparklstm.spark.evaluate import evaluate_scored
from sparklstm.metrics import report
from sparklstm.training.loop import CURVES_PNG


def decoded(path) -> np.ndarray:
    image = mpimg.imread(str(path))  # (H, W, 4) floats for a PNG
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image[..., :3].std() > 0.05  # not a blank canvas
    return image


def test_train_writes_the_training_curves(model_dir):
    image = decoded(model_dir / CURVES_PNG)
    assert image.shape[:2] == plots.pixels(plots.CURVES_SIZE) == (400, 1000)
    history = json.loads((model_dir / "metrics.json").read_text())["history"]
    assert len(history) >= 1 and {"train_loss", "val_macro_f1"} <= history[0].keys()


@pytest.fixture(scope="module")
def scored_table(spark, model_dir, tmp_path_factory):
    """A small table scored by the UDF: 60 labelled texts of the model's three classes."""
    path = tmp_path_factory.mktemp("plots") / "scored.parquet"
    classify = classify_udf(spark, model_dir, precision="fp32")
    df = spark.createDataFrame(make_corpus(60, seed=11))
    df.withColumn("prediction", classify("text")).write.parquet(str(path))
    return path


def test_evaluate_writes_confusion_and_f1_pngs_beside_the_json(spark, scored_table, model_dir, tmp_path):
    out = tmp_path / "report.json"
    result = evaluate_scored(spark, scored=str(scored_table), out=out, model_dir=model_dir)
    confusion, f1 = tmp_path / "report.confusion.png", tmp_path / "report.f1.png"
    assert result["plots"] == {"confusion": str(confusion), "f1": str(f1)}
    assert json.loads(out.read_text())["plots"] == result["plots"]
    assert result["labels"] == ["food", "sports", "tech"] and result["n"] == 60
    assert decoded(confusion).shape[:2] == plots.pixels(plots.confusion_size(3))
    assert decoded(f1).shape[:2] == plots.pixels(plots.f1_size(3))


def test_evaluate_refuses_labels_the_model_does_not_know(spark, model_dir, tmp_path):
    rows = make_corpus(12, seed=12)
    rows[0]["label"], rows[1]["label"] = "weather", "travel"
    path = tmp_path / "scored.parquet"
    classify = classify_udf(spark, model_dir, precision="fp32")
    spark.createDataFrame(rows).withColumn("prediction", classify("text")).write.parquet(str(path))
    unknown = r"2 true labels are not labels of the model .*'travel', 'weather'"
    with pytest.raises(SparklstmError, match=unknown):
        evaluate_scored(spark, scored=str(path), model_dir=model_dir)
    # Without the model, a label that is never predicted is just a class with recall 0.
    result = evaluate_scored(spark, scored=str(path))
    assert {"weather", "travel"} <= set(result["labels"])
    assert result["per_class"]["weather"]["recall"] == 0.0


def test_confusion_matrix_of_20_classes_is_readable_and_normalised(tmp_path):
    rng = np.random.default_rng(0)
    labels = [f"class_{k:02d}" for k in range(19)] + ["a_label_far_longer_than_the_others_are"]
    cm = rng.integers(0, 4, (20, 20)) + np.diag(rng.integers(30, 60, 20))
    cm[7] = 0  # a class with no true examples: its row stays grey, not a division by zero
    out = plots.confusion_matrix(cm, labels, out=tmp_path / "cm20.png")
    image = decoded(out)
    assert image.shape[:2] == plots.pixels(plots.confusion_size(20))
    assert image.shape[0] >= 1000 and image.shape[1] >= 1100  # ~50 px per class row
    shares = plots.row_shares(cm)
    np.testing.assert_allclose(np.nansum(shares, axis=1), [0.0 if k == 7 else 1.0 for k in range(20)])
    assert np.isnan(shares[7]).all()
    two = decoded(plots.confusion_matrix([[50, 0], [25, 25]], ["x", "y"], out=tmp_path / "cm2.png"))
    assert two.shape[:2] == plots.pixels(plots.confusion_size(2))
    np.testing.assert_allclose(plots.row_shares([[50, 0], [25, 25]]), [[1.0, 0.0], [0.5, 0.5]])
    f1 = decoded(plots.f1_bars(report(cm, labels)["per_class"], out=tmp_path / "f1.png", macro_f1=0.5))
    assert f1.shape[:2] == plots.pixels(plots.f1_size(20))


def test_figure_sizes_grow_with_the_class_count():
    assert plots.confusion_size(20)[1] > plots.confusion_size(5)[1] >= 5.0
    assert plots.f1_size(20)[1] > plots.f1_size(2)[1]
    assert plots.pixels((6.4, 5.0)) == (500, 640)
