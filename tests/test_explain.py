"""sparklstm.explain.attribution / sparklstm.explain.ig: attributions on real (tiny) torch models, no mocks.

* completeness: IG attributions sum to score(text) - score(baseline), for every cell, for the
  sigmoid (2 classes) and softmax (3 classes) heads;
* on a model trained to key on one word ("zebra"), that word gets the top attribution, by IG and
  by occlusion;
* explain_batch gives the single-text top-k; the CLI shows and writes the explanation.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sparklstm.artifact import ModelArtifact
from sparklstm.cli import app
from sparklstm.explain.attribution import explain, explain_batch, explain_many
from sparklstm.nn.model import LSTMClassifier
from sparklstm.predictor import Predictor
from sparklstm.text import Vocab

FILLER = ("the a of and to in is it that on for with as was at by this from or be are we you "
          "they old new red blue big small cat dog sun sea").split()
KEY = "zebra"


@contextlib.contextmanager
def single_thread():
    """One torch thread: these models are tiny, and on a busy 2-core machine a second thread's
    spin-waiting made the work many times slower (measured: 300 training steps, 0.8 s vs 115 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def one_thread():
    # Function scope: session fixtures (model_dir's training) are made before this applies.
    with single_thread():
        yield


def predictor_for(model: LSTMClassifier, words: list[str], labels: list[str], *, max_len: int = 64,
                  cell: str = "lstm", dims: tuple[int, int, int] = (8, 8, 2)) -> Predictor:
    """A Predictor around an in-memory model, as if loaded from a model directory."""
    embed, hidden, layers = dims
    config = {
        "labels": labels,
        "tokenizer": {"lowercase": True, "max_len": max_len},
        "model": {"cell": cell, "embed_dim": embed, "hidden_size": hidden, "num_layers": layers,
                  "dropout": 0.0, "vocab_size": len(words) + 2, "pooling": model.pooling,
                  "bidirectional": model.rnn_reverse is not None,
                  "bag_of_embeddings": model.bag_of_embeddings},
        "sha256": {"model.safetensors": "in-memory"},
    }
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return Predictor(ModelArtifact(config=config, vocab=Vocab(words), state_dict=state), precision="fp32")


def random_texts(n: int, *, seed: int, lo: int = 3, hi: int = 20) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(FILLER) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


# ----------------------------------------------------------------------------- completeness


@pytest.mark.parametrize("cell, pooling, bidirectional", [
    ("lstm", "last", False), ("peephole", "last", False), ("gru", "last", False),
    ("lstm", "concat", False), ("lstm", "last", True), ("lstm", "concat", True)])
@pytest.mark.parametrize("labels", [["neg", "pos"], ["a", "b", "c"]])
def test_integrated_gradients_are_complete(cell, pooling, bidirectional, labels):
    """sum(attributions) == score(text) - score(all-pad baseline): within 5% for every text (the
    documented tolerance; texts refine until 2%), and to ~1e-6 for most (smooth paths)."""
    torch.manual_seed(0)
    model = LSTMClassifier(vocab_size=len(FILLER) + 2, num_classes=len(labels), cell=cell,
                           embed_dim=8, hidden_size=8, num_layers=2, dropout=0.0, pooling=pooling,
                           bidirectional=bidirectional)
    # Larger weights than the default init, so scores move a lot along the path (a harder test).
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
        model.embedding.weight[0].zero_()
    predictor = predictor_for(model, FILLER, labels, cell=cell)
    texts = random_texts(12, seed=1)
    explanations = explain_many(predictor, texts, steps=50)
    # The check is not vacuous: scores move along the path (all texts; with concat pooling's
    # max and mean, a few texts land near their baseline).
    moved = [e for e in explanations if abs(e.score - e.baseline_score) > 1e-2]
    assert len(moved) >= (12 if pooling == "last" else 9)
    for e in explanations:
        delta = e.score - e.baseline_score
        # Max pooling switches its argmax step along the path (kinks): 50 Riemann steps leave an
        # absolute error of a few 1e-3 on this sharp model, visible on texts that barely move.
        assert e.attributions.sum() == pytest.approx(delta, rel=0.05, abs=1e-4 if pooling == "last" else 1e-2)
        assert e.completeness_error == pytest.approx(abs(e.attributions.sum() - delta) / abs(delta))
        assert len(e.attributions) == len(e.tokens)
    # Smooth paths (last state) are exact to ~1e-6; max pooling's kinks leave ~1-2% (median).
    assert np.median([e.completeness_error for e in explanations]) < (1e-4 if pooling == "last" else 0.03)


def test_score_is_the_signed_logit_of_the_predicted_class():
    """Binary head: score is z for class 1 and -z for class 0; softmax: the class logit."""
    torch.manual_seed(1)
    model = LSTMClassifier(vocab_size=len(FILLER) + 2, num_classes=2, embed_dim=8, hidden_size=8,
                           num_layers=1, dropout=0.0)
    predictor = predictor_for(model, FILLER, ["neg", "pos"], dims=(8, 8, 1))
    for text in random_texts(10, seed=2):
        e = explain(predictor, text)
        ids = torch.as_tensor(predictor.encode([text])[0], dtype=torch.long)[None]
        with torch.no_grad():
            z = predictor.model(ids, torch.tensor([ids.shape[1]]))[0, 0].item()
            z0 = predictor.model(torch.zeros_like(ids), torch.tensor([ids.shape[1]]))[0, 0].item()
        sign = 1.0 if e.label == "pos" else -1.0
        assert e.score == pytest.approx(sign * z, abs=1e-5)
        assert e.baseline_score == pytest.approx(sign * z0, abs=1e-5)
        assert e.probability >= 0.5


def test_only_the_first_max_len_tokens_are_attributed():
    torch.manual_seed(2)
    model = LSTMClassifier(vocab_size=len(FILLER) + 2, num_classes=2, embed_dim=8, hidden_size=8,
                           num_layers=1, dropout=0.0)
    predictor = predictor_for(model, FILLER, ["neg", "pos"], max_len=10, dims=(8, 8, 1))
    text = " ".join(FILLER[:16]) + " unseenword"
    for method in ("ig", "occlusion"):
        e = explain(predictor, text, method=method)
        assert e.tokens == FILLER[:10] and len(e.attributions) == 10
        assert e.truncated == 7


# ----------------------------------------------------------------------------- a model that keys on one word


@pytest.fixture(scope="module")
def zebra():
    """A 1-layer LSTM trained (pure torch, ~300 steps) on: label 1 iff "zebra" is in the text."""
    torch.manual_seed(0)
    rng = random.Random(0)
    words = FILLER + [KEY]
    vocab = Vocab(words)

    def sample():
        text = [rng.choice(FILLER) for _ in range(rng.randint(4, 14))]
        label = rng.random() < 0.5
        if label:
            text.insert(rng.randrange(len(text) + 1), KEY)
        return vocab.encode(" ".join(text), max_len=64), int(label)

    model = LSTMClassifier(vocab_size=len(vocab), num_classes=2, embed_dim=16, hidden_size=16,
                           num_layers=1, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with single_thread():
        for _ in range(300):
            batch = [sample() for _ in range(32)]
            lengths = torch.tensor([len(ids) for ids, _ in batch])
            x = torch.zeros(len(batch), int(lengths.max()), dtype=torch.long)
            for j, (ids, _) in enumerate(batch):
                x[j, : len(ids)] = torch.from_numpy(ids.astype(np.int64))
            loss = model.loss(model(x, lengths), torch.tensor([y for _, y in batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    return predictor_for(model, words, ["without", "with"], dims=(16, 16, 1))


def zebra_texts(n: int, *, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for text in random_texts(n, seed=seed, lo=4, hi=14):
        words = text.split()
        words.insert(rng.randrange(len(words) + 1), KEY.upper() if rng.random() < 0.3 else KEY)
        texts.append(" ".join(words))
    return texts


@pytest.mark.parametrize("method", ["ig", "occlusion"])
def test_the_key_word_gets_the_top_attribution(zebra, method):
    texts = zebra_texts(20, seed=5)
    explanations = explain_many(zebra, texts, method=method)
    assert all(e.label == "with" for e in explanations)  # the model learned the rule
    for e in explanations:
        assert e.top(1)[0][0] == KEY, (e.text, e.top(3))
        if method == "ig":
            assert e.completeness_error < 0.05
    # Texts without the word are "without"; the model is not just saying "with" everywhere.
    assert all(e.label == "without" for e in explain_many(zebra, random_texts(10, seed=6)))


def test_explain_batch_equals_single_text_explain(zebra):
    texts = zebra_texts(6, seed=7) + random_texts(4, seed=8)
    texts[2:2] = [None, "", "   "]
    batch = explain_batch(zebra, texts, k=3)
    assert [b is None for b in batch] == [t is None or not t.strip() for t in texts]
    for text, got in zip(texts, batch):
        if got is None:
            continue
        single = explain(zebra, text).top(3)
        assert [t for t, _ in got] == [t for t, _ in single]
        np.testing.assert_allclose([a for _, a in got], [a for _, a in single], rtol=1e-4, atol=1e-5)
    occluded = explain_batch(zebra, texts, k=2, method="occlusion")
    for text, got in zip(texts, occluded):
        if got is not None:
            single = explain(zebra, text, method="occlusion").top(2)
            assert [t for t, _ in got] == [t for t, _ in single]
            np.testing.assert_allclose([a for _, a in got], [a for _, a in single], atol=1e-5)


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch deprecates its quantized tensor API
@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_a_low_precision_predictor_is_explained_with_its_fp32_network(zebra, precision):
    """Quantized modules have no gradients, and a bf16 predictor's weights were cast once: IG
    runs on the fp32 network of the same artifact, for the class the predictor reports."""
    low = Predictor(zebra.artifact, precision=precision)
    assert precision == "int8" or low.cast_bf16  # a bf16 network, so explain needs an fp32 copy
    for text in zebra_texts(3, seed=9):
        e_low, e32 = explain(low, text), explain(zebra, text)
        assert e_low.label == e32.label == "with"
        np.testing.assert_allclose(e_low.attributions, e32.attributions, atol=1e-5)


def test_bad_arguments(zebra):
    from sparklstm.errors import SparklstmError

    with pytest.raises(SparklstmError, match="method"):
        explain(zebra, "a zebra", method="shap")
    with pytest.raises(SparklstmError, match="k must be"):
        explain_batch(zebra, ["a zebra"], k=0)
    assert explain(zebra, "   ") is None


# ----------------------------------------------------------------------------- CLI

runner = CliRunner()


def test_explain_cli_prints_the_coloured_text_and_writes_html(model_dir, tmp_path):
    page = tmp_path / "out.html"
    text = "the <b>team</b> & coach won the match & league"
    result = runner.invoke(app, ["explain", "--model", str(model_dir), text, "--html", str(page),
                                 "--top", "3"])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "predicted 'sports'" in result.stdout
    assert "completeness error" in result.stdout and "top 3 toward 'sports'" in result.stdout
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html and "<link" not in html
    assert "<b>" not in html and "&lt;" in html and "&gt;" in html  # the text is escaped
    assert "&amp;" in html and " & " not in html
    assert html.count('class="tok"') >= len("the b team b coach won the match league".split())
    assert "background:rgb(" in html


def test_explain_cli_occlusion_and_errors(model_dir):
    result = runner.invoke(app, ["explain", "--model", str(model_dir), "--method", "occlusion",
                                 "the chip and the server run code"])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "predicted 'tech'" in result.stdout and "occlusion" in result.stdout
    for args, message in ((["   "], "no tokens"), (["--method", "lime", "x"], "--method"),
                          (["--steps", "0", "x"], "--steps")):
        bad = runner.invoke(app, ["explain", "--model", str(model_dir), *args])
        lines = [line for line in bad.stderr.splitlines() if line.strip()]
        assert bad.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ")
        assert message in lines[0]
