"""The wide path (sparklstm/nn/wide.py): TF-IDF features, the logistic-regression fit, the mix of
the two paths, and exact per-token shares."""

import math
from collections import Counter

import numpy as np
import pytest
import torch

from sparklstm.nn.model import LSTMClassifier
from sparklstm.nn.wide import (MIN_DF, MIX_GRID, PAIR_PRIME, WideNgrams, _objective, choose_mix,
                               document_frequencies, fit_logistic, fit_wide, ngram_counts, nll,
                               set_idf, split_tensors)
from sparklstm.training.data import Split


def _rows(seed=0, n=60, vocab=30, max_len=12):
    rng = np.random.default_rng(seed)
    return [rng.integers(2, vocab, size=rng.integers(1, max_len + 1)) for _ in range(n)]


def _batch(rows):
    lengths = torch.tensor([len(r) for r in rows])
    ids = torch.zeros(len(rows), int(lengths.max()), dtype=torch.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r)
    return ids, lengths


def _reference_tfidf(rows, vocab, buckets):
    """scikit-learn's sublinear TF-IDF with min_df, written out in plain Python per row."""
    feats = [[int(t) for t in r] + [vocab + (int(a) * PAIR_PRIME + int(b)) % buckets
                                    for a, b in zip(r[:-1], r[1:])] for r in rows]
    df = Counter(f for fs in feats for f in set(fs))
    out = []
    for fs in feats:
        tf = Counter(fs)
        v = {f: (1 + math.log(c)) * (math.log((1 + len(rows)) / (1 + df[f])) + 1)
             for f, c in tf.items() if df[f] >= MIN_DF}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        out.append({f: x / norm for f, x in v.items()})
    return out


def test_tfidf_matches_the_formula_and_ignores_padding():
    rows, vocab, buckets = _rows(), 30, 13
    wide = WideNgrams(vocab_size=vocab, buckets=buckets, out_features=1)
    ids, lengths = _batch(rows)
    df, docs = document_frequencies(wide, [(ids, lengths, None)])
    set_idf(wide, df, docs)
    want = _reference_tfidf(rows, vocab, buckets)
    r, f, v = wide.features(ids, lengths)
    got = [dict() for _ in rows]
    for row, feat, val in zip(r.tolist(), f.tolist(), v.tolist()):
        if val:
            got[row][feat] = val
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        assert all(abs(g[k] - w[k]) < 1e-5 for k in w)
    # More padding changes nothing.
    wider = torch.cat([ids, torch.zeros(len(rows), 5, dtype=torch.int64)], dim=1)
    wide.weight.data.normal_()
    assert torch.allclose(wide(ids, lengths), wide(wider, lengths))


def test_ngram_counts_counts_repeats_once_per_row():
    ids, lengths = _batch([np.array([5, 5, 5]), np.array([5])])
    rows, feats, counts = ngram_counts(ids, lengths, vocab_size=10, buckets=7)
    table = {(r, f): c for r, f, c in zip(rows.tolist(), feats.tolist(), counts.tolist())}
    pair = 10 + (5 * PAIR_PRIME + 5) % 7
    assert table == {(0, 5): 3, (0, pair): 2, (1, 5): 1}


@pytest.mark.parametrize("classes", [1, 4])
def test_fit_logistic_reaches_the_optimum(classes):
    rng = np.random.default_rng(1)
    dense = torch.from_numpy(rng.random((80, 20)) * (rng.random((80, 20)) < 0.3)).float()
    y = torch.from_numpy(rng.integers(0, max(classes, 2), size=80))
    x = dense.to_sparse_csr()
    w, b = fit_logistic(x, y, out_features=classes, C=3.0)
    xt = dense.t().contiguous().to_sparse_csr()
    loss, gw, gb = _objective(x, xt, y, w, b, 3.0, classes == 1)
    assert gw.abs().max() < 1e-4 and gb.abs().max() < 1e-4  # stationary: the convex optimum
    # And the analytic gradient is autograd's.
    w2, b2 = w.clone().requires_grad_(), b.clone().requires_grad_()
    logits = dense @ w2 + b2
    ce = (torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y.float())
          if classes == 1 else torch.nn.functional.cross_entropy(logits, y))
    (ce + 0.5 / (3.0 * 80) * w2.pow(2).sum()).backward()
    assert torch.allclose(w2.grad, gw, atol=1e-6)


def test_fit_wide_learns_a_separable_corpus_and_picks_C_on_validation():
    rng = np.random.default_rng(2)
    # Class k texts always contain token 2 + k; the rest is noise shared by all classes.
    def make(n):
        y = rng.integers(0, 3, size=n)
        ids = [np.concatenate([[2 + k], rng.integers(5, 40, size=6)]) for k in y]
        return Split(ids=ids, lengths=np.array([len(i) for i in ids]), labels=y)
    train, val = make(200), make(60)
    wide = WideNgrams(vocab_size=40, buckets=101, out_features=3)
    fit = fit_wide(wide, train_split=train, val_split=val, num_classes=3, log=lambda s: None)
    assert fit.val_macro_f1 == 1.0
    assert [g["C"] for g in fit.grid] == [0.3, 1.0, 3.0, 10.0, 30.0, 100.0]
    ids, lengths, labels = next(split_tensors(val, batch_size=1000))
    assert (wide(ids, lengths).argmax(dim=1) == labels).all()


@pytest.mark.parametrize("classes", [2, 5])
def test_token_shares_sum_to_the_wide_logit(classes):
    rows = _rows(seed=3, n=20)
    ids, lengths = _batch(rows)
    wide = WideNgrams(vocab_size=30, buckets=11, out_features=1 if classes == 2 else classes)
    df, docs = document_frequencies(wide, [(ids, lengths, None)])
    set_idf(wide, df, docs)
    wide.weight.data.normal_()
    wide.bias.data.normal_()
    target = torch.randint(0, classes, (len(rows),))
    column = torch.zeros_like(target) if classes == 2 else target
    sign = torch.where(target == 1, 1.0, -1.0) if classes == 2 else torch.ones(len(rows))
    shares = wide.token_contributions(ids, lengths, column, sign)  # (B, T)
    logits = wide(ids, lengths)
    want = sign * (logits.gather(1, column[:, None])[:, 0] - wide.bias[column])
    assert torch.allclose(shares.sum(dim=1), want, atol=1e-5)
    assert (shares[torch.arange(ids.shape[1])[None, :] >= lengths[:, None]] == 0).all()


def test_choose_mix_prefers_the_path_that_is_right():
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    right = torch.where(y == 1, 3.0, -3.0)[:, None]
    wrong = -right
    assert choose_mix(wrong, right, y, num_classes=2)[0] >= 0.5
    assert choose_mix(right, wrong, y, num_classes=2)[0] <= 0.5
    mix, f1 = choose_mix(right, right, y, num_classes=2)
    assert f1 == 1.0


def test_choose_mix_takes_the_lowest_log_loss_not_a_lucky_macro_f1_step():
    # Row 0 is wrong under every mix above 0.25, but the wide path is far more confident on the
    # other rows: macro-F1 peaks at mix 0 (one row), log loss at a high mix.
    y = torch.tensor([1, 0, 1, 0, 1, 0, 1, 0])
    wide = torch.tensor([-0.5, -4.0, 4.0, -4.0, 4.0, -4.0, 4.0, -4.0])[:, None]
    deep = torch.tensor([0.2, -0.1, 0.1, -0.1, 0.1, -0.1, 0.1, -0.1])[:, None]
    mix, f1 = choose_mix(deep, wide, y, num_classes=2)
    losses = {m: nll((1 - m) * deep + m * wide, y) for m in MIX_GRID}
    assert mix == min(losses, key=losses.get) and mix > 0.5
    assert f1 < 1.0  # row 0 is wrong there: macro-F1 alone would have picked mix 0 (F1 = 1)


def test_mixed_model_output_is_the_weighted_sum_of_its_paths():
    torch.manual_seed(0)
    m = LSTMClassifier(vocab_size=30, num_classes=3, wide=True, wide_buckets=11).eval()
    ids, lengths = _batch(_rows(seed=4, n=8))
    m.wide.idf.fill_(1.0)
    m.wide.weight.data.normal_()
    m.wide.mix.fill_(0.3)
    with torch.no_grad():
        want = 0.7 * m.deep_logits(ids, lengths) + 0.3 * m.wide(ids, lengths)
        assert torch.allclose(m(ids, lengths), want, atol=1e-6)
    # The wide weights are saved with the model and load back.
    m2 = LSTMClassifier(vocab_size=30, num_classes=3, wide=True, wide_buckets=11)
    m2.load_state_dict(m.state_dict())
    assert float(m2.wide.mix) == pytest.approx(0.3)


def test_training_fits_the_wide_path_first_and_records_it(prepped_dir, tmp_path):
    """The default model fits the wide path, records its C and mix; --no-wide trains without."""
    import dataclasses

    from conftest import FAST_TRAIN, SMALL_MODEL

    from sparklstm.artifact import load_artifact
    from sparklstm import train
    from sparklstm.nn.wide import C_GRID

    quick = dataclasses.replace(FAST_TRAIN, epochs=2)
    metrics = train(prepped=prepped_dir, out=tmp_path / "wide", model_config=SMALL_MODEL,
                    train_config=quick, progress=False, log=lambda m: None)
    assert metrics["wide"]["C"] in C_GRID and 0 <= metrics["wide"]["mix"] <= 1
    assert all("mix" in h and "val_macro_f1_deep" in h for h in metrics["history"])
    model = load_artifact(tmp_path / "wide").build_model()
    assert float(model.wide.mix) == metrics["wide"]["mix"] and (model.wide.idf > 0).any()

    plain = dataclasses.replace(SMALL_MODEL, wide=False)
    metrics = train(prepped=prepped_dir, out=tmp_path / "plain", model_config=plain,
                    train_config=quick, progress=False, log=lambda m: None)
    assert "wide" not in metrics and load_artifact(tmp_path / "plain").build_model().wide is None
