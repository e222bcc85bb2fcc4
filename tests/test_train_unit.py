"""Pure-Python parts of training: metrics.report, data.batch_indices, config loading."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from sparklstm.config import Config, apply_overrides, load_config
from sparklstm.training.data import batch_indices, pad_ids
from sparklstm.errors import SparklstmError
from sparklstm.metrics import confusion_matrix, report

DEFAULT_TOML = Path(__file__).resolve().parent.parent / "conf" / "default.toml"

# ----------------------------------------------------------------------------- metrics

# rows = true class, columns = predicted. "c" is never predicted.
CM = np.array([
    [5, 1, 0],  # a: 6 rows
    [2, 3, 0],  # b: 5 rows
    [1, 1, 0],  # c: 2 rows
])


def test_report_hand_computed():
    """Accuracy, per-class precision/recall/F1 and macro-F1 equal the hand-computed values."""
    r = report(CM, ["a", "b", "c"])
    assert r["n"] == 13
    assert r["accuracy"] == pytest.approx(8 / 13)
    a, b, c = (r["per_class"][k] for k in "abc")
    # a: tp 5, predicted 5+2+1 = 8, support 6 -> P 5/8, R 5/6, F1 2PR/(P+R) = 5/7
    assert (a["precision"], a["recall"], a["f1"], a["support"]) == pytest.approx((5 / 8, 5 / 6, 5 / 7, 6))
    # b: tp 3, predicted 1+3+1 = 5, support 5 -> P = R = F1 = 3/5
    assert (b["precision"], b["recall"], b["f1"], b["support"]) == pytest.approx((3 / 5, 3 / 5, 3 / 5, 5))
    # c: never predicted -> precision defined as 0, recall 0/2, F1 0 (no NaN)
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (0.0, 0.0, 0.0, 2)
    assert r["macro_f1"] == pytest.approx((5 / 7 + 3 / 5 + 0) / 3)  # = 46/105
    assert r["labels"] == ["a", "b", "c"]
    assert r["confusion_matrix"] == CM.tolist()


def test_report_macro_f1_skips_classes_absent_from_truth():
    """A class with zero support (never true) is reported but left out of the macro average."""
    cm = np.array([[4, 0, 1], [0, 3, 0], [0, 0, 0]])  # "c" predicted once, never true
    r = report(cm, ["a", "b", "c"])
    assert r["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    f1_a = 2 * 1.0 * 0.8 / 1.8
    assert r["macro_f1"] == pytest.approx((f1_a + 1.0) / 2)
    assert r["accuracy"] == pytest.approx(7 / 8)


def test_report_empty_matrix():
    """An all-zero matrix gives zeros, not NaN or a ZeroDivisionError."""
    r = report(np.zeros((2, 2), dtype=int), ["x", "y"])
    assert (r["accuracy"], r["macro_f1"], r["n"]) == (0.0, 0.0, 0)


def test_confusion_matrix_counts():
    """confusion_matrix puts true classes in rows and predictions in columns."""
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


# ----------------------------------------------------------------------------- batch_indices


def _lengths(n: int = 5000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 300, size=n).astype(np.int64)


@pytest.mark.parametrize("seed", [None, 0, 1])
@pytest.mark.parametrize("n, batch_size, window", [(5000, 32, 50), (1001, 64, 3), (7, 10, 50)])
def test_every_row_exactly_once(seed, n, batch_size, window):
    """Each epoch's batches cover every row exactly once, none larger than batch_size."""
    rng = None if seed is None else np.random.default_rng(seed)
    batches = batch_indices(_lengths(n), batch_size=batch_size, rng=rng, window=window)
    rows = np.concatenate(batches)
    assert np.array_equal(np.sort(rows), np.arange(n))
    assert all(1 <= len(b) <= batch_size for b in batches)


def test_eval_mode_is_sorted_by_length():
    """Without rng the batches are consecutive slices of a stable length sort."""
    lengths = _lengths(1000)
    batches = batch_indices(lengths, batch_size=64, rng=None)
    rows = np.concatenate(batches)
    assert np.array_equal(rows, np.argsort(lengths, kind="stable"))
    assert np.all(np.diff(lengths[rows]) >= 0)
    assert [len(b) for b in batches] == [64] * 15 + [40]


def test_training_batches_reproducible_with_seed_and_vary_across_seeds():
    """The same rng seed gives the same batches; another seed (or the next epoch) differs."""
    lengths = _lengths(3000)

    def epoch(rng):
        return batch_indices(lengths, batch_size=32, rng=rng, window=10)

    a, b = epoch(np.random.default_rng(7)), epoch(np.random.default_rng(7))
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    c = epoch(np.random.default_rng(8))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    rng = np.random.default_rng(7)
    first, second = epoch(rng), epoch(rng)  # successive epochs of one training run
    assert not all(np.array_equal(x, y) for x, y in zip(first, second))


def _padding_ratio(lengths, batches) -> float:
    """Padded tokens (each batch padded to its longest row) / real tokens."""
    padded = sum(int(lengths[b].max()) * len(b) for b in batches)
    return padded / int(lengths.sum())


def test_training_batches_have_little_padding():
    """Sorting inside windows keeps padded width / real length close to 1 (random order is not)."""
    lengths = _lengths(6400)
    batches = batch_indices(lengths, batch_size=32, rng=np.random.default_rng(0), window=50)
    assert _padding_ratio(lengths, batches) < 1.05
    shuffled = np.random.default_rng(0).permutation(len(lengths))
    random_batches = [shuffled[i:i + 32] for i in range(0, len(shuffled), 32)]
    assert _padding_ratio(lengths, random_batches) > 1.5  # what bucketing saves


def test_pad_ids_right_pads_to_the_longest_row():
    """pad_ids gives (B, T) with T the longest selected row and zeros after each row."""
    ids = [np.array([5, 6, 7], np.int32), np.array([8], np.int32), np.array([9, 10], np.int32)]
    lengths = np.array([3, 1, 2])
    out = pad_ids(ids, lengths, np.array([2, 1]))
    assert out.dtype == np.int64
    assert out.tolist() == [[9, 10], [8, 0]]


# ----------------------------------------------------------------------------- config


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "conf.toml"
    path.write_text(text)
    return path


def test_default_toml_equals_dataclass_defaults():
    """conf/default.toml states exactly the built-in defaults."""
    assert DEFAULT_TOML.is_file()
    assert load_config(path=DEFAULT_TOML) == Config()


def test_default_toml_lists_every_key():
    """Every dataclass field appears in conf/default.toml (it documents all settings)."""
    import tomllib

    data = tomllib.loads(DEFAULT_TOML.read_text())
    for section in dataclasses.fields(Config):
        keys = {f.name for f in dataclasses.fields(getattr(Config(), section.name))}
        assert set(data[section.name]) == keys, section.name


def test_toml_file_overrides_defaults(tmp_path):
    """A key in the TOML file replaces the default; the rest stay default."""
    path = _write(tmp_path, '[train]\nepochs = 3\nlr = 1\n[model]\ncell = "gru"\n')
    cfg = load_config(path=path)
    assert cfg.train.epochs == 3
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # int accepted for a float
    assert cfg.model.cell == "gru"
    assert cfg.train.batch_size == Config().train.batch_size
    assert cfg.prep == Config().prep


def test_cli_overrides_beat_the_file(tmp_path):
    """overrides (CLI flags) win over the file; None means 'flag not given' and keeps the file's value."""
    path = _write(tmp_path, "[train]\nepochs = 3\nbatch_size = 16\n")
    cfg = load_config(path=path, overrides={"train": {"epochs": 9, "batch_size": None}})
    assert cfg.train.epochs == 9
    assert cfg.train.batch_size == 16


def test_overrides_do_not_mutate_the_input():
    """apply_overrides returns a new config and leaves its argument unchanged."""
    base = Config()
    new = apply_overrides(base, {"score": {"batch_size": 8}})
    assert new.score.batch_size == 8
    assert base.score.batch_size == Config().score.batch_size


@pytest.mark.parametrize(
    "toml, match",
    [
        ("[trian]\nepochs = 3\n", "unknown section"),
        ("[train]\nepoch = 3\n", "unknown key"),
        ("epochs = 3\n", "must be a \\[section\\]"),
        ('[train]\nepochs = "ten"\n', "expected int"),
        ("[train]\nepochs = 1.5\n", "expected int"),
        ("[train]\nepochs = true\n", "expected int"),
        ("[prep]\nlowercase = 1\n", "expected bool"),
        ('[train]\nlr = "fast"\n', "expected float"),
        ("[score]\ntext_col = 3\n", "expected str"),
        ('[model]\ncell = "transformer"\n', "is not one of"),
        ('[train]\ndevice = "tpu"\n', "is not one of"),
        ("[train\nepochs = 3\n", "not valid TOML"),
    ],
)
def test_bad_config_file_is_an_error(tmp_path, toml, match):
    """Unknown sections/keys, wrong types, bad choices and broken TOML are SparklstmErrors."""
    with pytest.raises(SparklstmError, match=match):
        load_config(path=_write(tmp_path, toml))


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"nope": {"x": 1}}, "unknown section"),
        ({"model": {"layers": 3}}, "unknown key"),
        ({"model": {"num_layers": "3"}}, "expected int"),
    ],
)
def test_bad_overrides_are_errors(overrides, match):
    """Overrides are checked as strictly as the file."""
    with pytest.raises(SparklstmError, match=match):
        load_config(overrides=overrides)


def test_missing_config_file(tmp_path):
    """A config path that does not exist is a SparklstmError."""
    with pytest.raises(SparklstmError, match="not found"):
        load_config(path=tmp_path / "missing.toml")


@pytest.mark.parametrize("dropout", [1.0, -0.1])
def test_train_refuses_a_dropout_outside_0_1(tmp_path, dropout):
    """Checked before any data is read: a dropout of 1 would divide by zero in training."""
    from sparklstm.config import ModelConfig
    from sparklstm import train

    with pytest.raises(SparklstmError, match="model.dropout"):
        train(prepped=tmp_path / "absent", out=tmp_path / "m", model_config=ModelConfig(dropout=dropout))
