"""Training end to end on prepped/ made by Spark: accuracy, metrics.json, reproducibility."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from conftest import FAST_TRAIN, SMALL_MODEL
from sparklstm.config import TrainConfig
from sparklstm.errors import SparklstmError
from sparklstm import train


def test_separable_corpus_reaches_over_90_percent(model_dir):
    """The fixture model (3 classes, keyword-separable texts) scores > 0.9 on val and test."""
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["val"]["accuracy"] > 0.9
    assert metrics["test"]["accuracy"] > 0.9
    assert set(metrics["test"]["per_class"]) == {"food", "sports", "tech"}
    assert metrics["best_epoch"] >= 1 and len(metrics["history"]) >= metrics["best_epoch"]
    assert metrics["train_tokens_per_s"] > 0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_same_seed_same_weights(prepped_dir, tmp_path, precision):
    """Two runs with one seed give identical weights and metrics; another seed does not."""
    cfg = TrainConfig(epochs=1, batch_size=32, lr=5e-3, seed=7, precision=precision)
    runs = []
    for n, seed in enumerate((7, 7, 8)):
        out = tmp_path / f"m{n}"
        m = train(prepped=prepped_dir, out=out, model_config=SMALL_MODEL, progress=False,
                  train_config=TrainConfig(**{**cfg.__dict__, "seed": seed}), log=lambda s: None)
        runs.append((load_file(out / "model.safetensors"), m))
    (w0, m0), (w1, m1), (w2, _) = runs
    assert all((w0[k] == w1[k]).all() for k in w0)
    assert m0["val"] == m1["val"] and m0["history"][0]["train_loss"] == m1["history"][0]["train_loss"]
    assert any((w0[k] != w2[k]).any() for k in w0)


def test_early_stopping_keeps_the_best_epoch(prepped_dir, tmp_path):
    """With patience 1 training stops after the first epoch without improvement, and the saved
    model is the best epoch's (its val macro-F1 is the history's maximum)."""
    m = train(prepped=prepped_dir, out=tmp_path / "m", model_config=SMALL_MODEL, progress=False,
              train_config=TrainConfig(**{**FAST_TRAIN.__dict__, "epochs": 8, "patience": 1}),
              log=lambda s: None)
    f1s = [h["val_macro_f1"] for h in m["history"]]
    assert m["val"]["macro_f1"] == pytest.approx(max(f1s))
    assert m["history"][m["best_epoch"] - 1]["val_macro_f1"] == max(f1s)
    if len(f1s) < 8:  # stopped early: the last epoch did not improve
        assert f1s[-1] <= max(f1s[:-1])


def test_not_a_prepped_directory(tmp_path):
    with pytest.raises(SparklstmError, match="not a prepped/ directory"):
        train(prepped=tmp_path, out=tmp_path / "m", progress=False)


def test_tuning_options_train_and_round_trip(prepped_dir, tmp_path):
    """Concat pooling, a cosine schedule and balanced class weights train to > 0.9 on the
    separable corpus, and the saved model scores the same after loading (pooling in config.json)."""
    from dataclasses import replace

    from sparklstm.predictor import Predictor

    out = tmp_path / "m"
    m = train(prepped=prepped_dir, out=out, progress=False, log=lambda s: None,
              model_config=replace(SMALL_MODEL, pooling="concat"),
              train_config=replace(FAST_TRAIN, lr_schedule="cosine", class_weights="balanced"))
    assert m["test"]["accuracy"] > 0.9
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["pooling"] == "concat"
    p = Predictor.from_dir(out, precision="fp32")
    both = 2 if SMALL_MODEL.bidirectional else 1  # concat per direction, then the mean embedding
    bag = SMALL_MODEL.embed_dim if SMALL_MODEL.bag_of_embeddings else 0
    assert p.model.pooling == "concat"
    assert p.model.head.in_features == both * 3 * SMALL_MODEL.hidden_size + bag


def test_cosine_schedule_runs_from_lr_to_zero():
    from sparklstm.training.loop import lr_at

    cfg = TrainConfig(lr=2e-3, lr_schedule="cosine")
    assert lr_at(cfg, 0.0) == pytest.approx(2e-3)
    assert lr_at(cfg, 0.5) == pytest.approx(1e-3)
    assert lr_at(cfg, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(TrainConfig(lr=2e-3, lr_schedule="constant"), 0.7) == 2e-3


def test_token_budget_cuts_epochs_and_keeps_at_least_one():
    from sparklstm.training.loop import planned_epochs

    cfg = TrainConfig(epochs=10, token_budget=1_000)
    assert planned_epochs(cfg, train_tokens=99) == 10  # small split: every epoch
    assert planned_epochs(cfg, train_tokens=300) == 3  # 3 x 300 <= 1,000 < 4 x 300
    assert planned_epochs(cfg, train_tokens=5_000) == 1  # larger than the budget: still one
    assert planned_epochs(TrainConfig(epochs=10, token_budget=0), train_tokens=10**9) == 10
    with pytest.raises(SparklstmError, match="token_budget"):
        planned_epochs(TrainConfig(token_budget=-1), train_tokens=10)
    with pytest.raises(SparklstmError, match="epochs"):
        planned_epochs(TrainConfig(epochs=0), train_tokens=10)


def test_a_budget_below_two_epochs_trains_one_epoch_with_the_whole_schedule(prepped_dir, tmp_path):
    """The split's real tokens, counted in memory and streamed alike, decide the epochs; the run
    says so in its log and in metrics.json."""
    from dataclasses import replace

    from sparklstm.training.data import read_split
    from sparklstm.training.shards import ShardedSplit

    tokens = read_split(prepped_dir / "train").tokens()
    assert ShardedSplit(prepped_dir / "train", buffer_rows=10).tokens() == tokens > 0
    lines = []
    m = train(prepped=prepped_dir, out=tmp_path / "m", model_config=SMALL_MODEL, progress=False,
              train_config=replace(FAST_TRAIN, epochs=5, token_budget=tokens + tokens // 2),
              log=lines.append)
    assert m["epochs_planned"] == 1 and len(m["history"]) == 1
    assert any("1 epoch(s) instead of 5" in line for line in lines), lines
    assert m["test"]["accuracy"] > 0.5
