"""sparklstm.artifact and sparklstm.predictor on a model trained by the `model_dir` fixture.

Tampering tests work on tmp copies of the model directory; the fixture's directory is only read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import struct

import numpy as np
import pytest
import torch
from conftest import SMALL_MODEL, make_corpus

import sparklstm
from sparklstm.artifact import CONFIG, VOCAB, WEIGHTS, load_artifact
from sparklstm.errors import SparklstmError
from sparklstm.nn.model import LSTMClassifier
from sparklstm.predictor import Predictor
from sparklstm.text import tokenize

TEXTS = [row["text"] for row in make_corpus(60, seed=123)]


@pytest.fixture
def model_copy(model_dir, tmp_path):
    """A private copy of the trained model directory that a test may damage."""
    return shutil.copytree(model_dir, tmp_path / "model")


@pytest.fixture(scope="module")
def predictor(model_dir):
    return Predictor.from_dir(model_dir, precision="fp32")


def _probs(results) -> np.ndarray:
    return np.array([r["probabilities"] for r in results])


# ----------------------------------------------------------------------------- round trip


def test_two_loads_give_identical_predictions(model_dir):
    """Two independent loads hold the same weights and predict bit-identical probabilities."""
    a, b = load_artifact(model_dir), load_artifact(model_dir)
    assert a.state_dict.keys() == b.state_dict.keys()
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k])
    pa, pb = Predictor(a, precision="fp32").predict(TEXTS), Predictor(b, precision="fp32").predict(TEXTS)
    assert [r["label"] for r in pa] == [r["label"] for r in pb]
    np.testing.assert_array_equal(_probs(pa), _probs(pb))


def test_predictor_equals_model_rebuilt_from_the_files(model_dir, predictor):
    """Predictor output equals a classifier rebuilt by hand from config.json + safetensors."""
    from safetensors import safe_open

    config = json.loads((model_dir / CONFIG).read_text())
    m = config["model"]
    model = LSTMClassifier(vocab_size=m["vocab_size"], num_classes=len(config["labels"]),
                           cell=m["cell"], embed_dim=m["embed_dim"], hidden_size=m["hidden_size"],
                           num_layers=m["num_layers"], dropout=m["dropout"], pooling=m["pooling"],
                           bidirectional=m["bidirectional"], bag_of_embeddings=m["bag_of_embeddings"],
                           wide=m["wide"], wide_buckets=m["wide_buckets"])
    with safe_open(str(model_dir / WEIGHTS), framework="pt") as f:
        model.load_state_dict({k: f.get_tensor(k) for k in f.keys()}, strict=True)
    model.eval()
    tokens = json.loads((model_dir / VOCAB).read_text(encoding="utf-8"))["tokens"]
    index = {t: i for i, t in enumerate(tokens)}
    max_len = config["tokenizer"]["max_len"]

    got = _probs(predictor.predict(TEXTS))
    with torch.no_grad():
        for text, p in zip(TEXTS, got):
            ids = [index.get(t, 1) for t in tokenize(text)][:max_len]
            x = torch.tensor([ids])
            want = model.probabilities(model(x, torch.tensor([len(ids)])))[0].double().numpy()
            np.testing.assert_allclose(p, want, rtol=0, atol=1e-6)


def test_loaded_model_classifies_fresh_texts(predictor):
    """The reloaded model maps labels correctly: it classifies unseen separable texts well."""
    rows = make_corpus(90, seed=7)
    results = predictor.predict([r["text"] for r in rows])
    accuracy = np.mean([res["label"] == r["label"] for res, r in zip(results, rows)])
    assert accuracy >= 0.8


# ----------------------------------------------------------------------------- files on disk


def test_weights_file_is_pure_safetensors(model_dir):
    """model.safetensors is a safetensors header plus raw tensor bytes: no pickle, no zip."""
    from safetensors import safe_open

    raw = (model_dir / WEIGHTS).read_bytes()
    assert not raw.startswith(b"PK") and not raw.startswith(b"\x80")  # torch zip / pickle
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    assert entries and all(set(v) == {"dtype", "shape", "data_offsets"} for v in entries.values())
    # The tensors' byte ranges cover the whole file after the header: nowhere to hide a pickle.
    assert 8 + n + max(v["data_offsets"][1] for v in entries.values()) == len(raw)
    art = load_artifact(model_dir)
    with safe_open(str(model_dir / WEIGHTS), framework="pt") as f:
        assert set(f.keys()) == set(art.state_dict)
        for k in f.keys():
            assert torch.equal(f.get_tensor(k), art.state_dict[k])


def test_config_json_contents(model_dir, prepped_dir):
    """config.json records format version, labels, max_len, package version, model and sha256s."""
    config = json.loads((model_dir / CONFIG).read_text())
    assert config["format"] == "sparklstm-model"
    assert config["format_version"] == 1
    assert config["package_version"] == sparklstm.__version__
    assert config["labels"] == json.loads((prepped_dir / "labels.json").read_text())
    assert sorted(config["labels"]) == ["food", "sports", "tech"]
    assert config["tokenizer"] == {"lowercase": True, "max_len": 64}  # conftest's PrepConfig
    vocab = json.loads((model_dir / VOCAB).read_text(encoding="utf-8"))
    assert config["model"] == {**dataclasses.asdict(SMALL_MODEL), "vocab_size": len(vocab["tokens"])}
    assert config["sha256"][WEIGHTS] == hashlib.sha256((model_dir / WEIGHTS).read_bytes()).hexdigest()
    assert config["sha256"][VOCAB] == hashlib.sha256((model_dir / VOCAB).read_bytes()).hexdigest()
    assert load_artifact(model_dir).model_id == config["sha256"][WEIGHTS]


# ----------------------------------------------------------------------------- tampering


def _rewrite_config(model_dir, **changes):
    path = model_dir / CONFIG
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))
    return config


def test_flipped_byte_in_weights_is_refused(model_copy):
    """One flipped byte in model.safetensors fails the sha256 check."""
    path = model_copy / WEIGHTS
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(SparklstmError, match=r"model\.safetensors.*sha256.*altered"):
        load_artifact(model_copy)


def test_truncated_weights_are_refused(model_copy):
    """A truncated model.safetensors is a SparklstmError (sha256 mismatch)."""
    path = model_copy / WEIGHTS
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(SparklstmError, match=r"sha256.*truncated"):
        load_artifact(model_copy)


def test_truncated_weights_with_matching_sha_are_still_refused(model_copy):
    """Even with config.json's sha256 updated, a truncated safetensors file is a clear error."""
    path = model_copy / WEIGHTS
    cut = path.read_bytes()[:-100]
    path.write_bytes(cut)
    config = json.loads((model_copy / CONFIG).read_text())
    _rewrite_config(model_copy, sha256={**config["sha256"], WEIGHTS: hashlib.sha256(cut).hexdigest()})
    with pytest.raises(SparklstmError, match="not readable"):
        load_artifact(model_copy)


def test_tampered_vocab_is_refused(model_copy):
    """Swapping two tokens in vocab.json (still valid JSON) fails the sha256 check."""
    path = model_copy / VOCAB
    vocab = json.loads(path.read_text(encoding="utf-8"))
    vocab["tokens"][2], vocab["tokens"][3] = vocab["tokens"][3], vocab["tokens"][2]
    path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(SparklstmError, match=r"vocab\.json.*sha256"):
        load_artifact(model_copy)


def test_config_that_disagrees_with_weights_is_refused(model_copy):
    """Scoring rebuilds from config.json: a hidden_size that does not fit the weights is an error."""
    config = json.loads((model_copy / CONFIG).read_text())
    _rewrite_config(model_copy, model={**config["model"], "hidden_size": 2 * config["model"]["hidden_size"]})
    with pytest.raises(SparklstmError, match="do not match config.json"):
        Predictor.from_dir(model_copy, precision="fp32")


def test_empty_directory_is_not_a_model(tmp_path):
    """An empty directory is 'not a sparklstm model directory'."""
    with pytest.raises(SparklstmError, match="not a sparklstm model directory"):
        load_artifact(tmp_path)


def test_missing_config_is_not_a_model(model_copy):
    """Without config.json a directory is not a model, and the message names the missing file."""
    (model_copy / CONFIG).unlink()
    with pytest.raises(SparklstmError, match=r"not a sparklstm model directory \(missing config\.json\)"):
        load_artifact(model_copy)


def test_missing_directory(tmp_path):
    """A path that does not exist is a SparklstmError."""
    with pytest.raises(SparklstmError, match="not found"):
        load_artifact(tmp_path / "nope")


def test_other_format_version_is_refused(model_copy):
    """A config.json with another format_version is refused with both versions in the message."""
    _rewrite_config(model_copy, format_version=2)
    with pytest.raises(SparklstmError, match=r"format version 2 is not supported.*version 1"):
        load_artifact(model_copy)


@pytest.mark.parametrize("content", ["{not json", "[]", '{"format": "something-else"}'])
def test_config_that_is_not_a_sparklstm_config(model_copy, content):
    """A config.json that is not JSON, or not ours, is a SparklstmError."""
    (model_copy / CONFIG).write_text(content)
    with pytest.raises(SparklstmError, match="config.json"):
        load_artifact(model_copy)


# ----------------------------------------------------------------------------- Predictor


def test_predict_none_and_blank_give_none(predictor):
    """None, '' and whitespace give None; real texts keep their positions."""
    texts = [None, TEXTS[0], "", "   ", "\t\n", TEXTS[1], float("nan")]
    results = predictor.predict(texts)
    assert len(results) == len(texts)
    assert [r is None for r in results] == [True, False, True, True, True, False, True]
    for k, text in ((1, TEXTS[0]), (5, TEXTS[1])):
        alone = predictor.predict([text])[0]
        assert results[k]["label"] == alone["label"]
        np.testing.assert_allclose(results[k]["probabilities"], alone["probabilities"], atol=1e-6)


def test_predict_result_structure(predictor):
    """Each result has a known label, its probability, and probabilities that sum to 1."""
    for r in predictor.predict(TEXTS[:10] + ["zzzz qqqq unknown-only words"]):
        assert r["label"] in predictor.labels
        assert len(r["probabilities"]) == len(predictor.labels)
        assert sum(r["probabilities"]) == pytest.approx(1.0, abs=1e-6)
        k = predictor.labels.index(r["label"])
        assert r["probability"] == r["probabilities"][k] == max(r["probabilities"])


def test_text_scores_the_same_alone_and_in_a_batch(predictor):
    """A short text predicts the same alone and inside a batch of longer (padded-over) texts."""
    short = "goal team the"
    longer = sorted(TEXTS, key=len)[-20:]
    alone = predictor.predict([short])[0]
    batch = predictor.predict(longer[:10] + [short] + longer[10:])
    assert max(len(tokenize(t)) for t in longer) > len(tokenize(short))
    assert batch[10]["label"] == alone["label"]
    np.testing.assert_allclose(batch[10]["probabilities"], alone["probabilities"], rtol=0, atol=1e-6)


def test_batch_size_does_not_change_predictions(model_dir):
    """predict with batch_size=1 equals batch_size=256 (labels and probabilities)."""
    one = Predictor.from_dir(model_dir, batch_size=1, precision="fp32").predict(TEXTS)
    many = Predictor.from_dir(model_dir, batch_size=256, precision="fp32").predict(TEXTS)
    assert [r["label"] for r in one] == [r["label"] for r in many]
    np.testing.assert_allclose(_probs(one), _probs(many), rtol=0, atol=1e-6)


def test_text_is_truncated_to_max_len(predictor):
    """Tokens after max_len are ignored: appending words past the limit changes nothing."""
    head = " ".join(["goal"] * 10 + ["the"] * (predictor.max_len - 10))
    assert len(tokenize(head)) == predictor.max_len
    a, b = predictor.predict([head, head + " oven recipe bake spice " * 20])
    assert a["label"] == b["label"]
    np.testing.assert_allclose(a["probabilities"], b["probabilities"], rtol=0, atol=1e-6)


def test_a_model_saved_before_the_wide_path_loads_and_scores_as_before(model_dir, tmp_path):
    """A model directory written before the wide path (no ``wide`` keys in config.json, no
    ``wide.*`` weights) loads and scores with its recurrent path alone."""
    from safetensors.torch import load, save

    old = shutil.copytree(model_dir, tmp_path / "old")
    state = load((old / WEIGHTS).read_bytes())
    assert any(k.startswith("wide.") for k in state)  # the fixture model has the wide path
    weights = save({k: v for k, v in state.items() if not k.startswith("wide.")})
    (old / WEIGHTS).write_bytes(weights)
    config = json.loads((old / CONFIG).read_text())
    del config["model"]["wide"], config["model"]["wide_buckets"]
    config["sha256"][WEIGHTS] = hashlib.sha256(weights).hexdigest()
    (old / CONFIG).write_text(json.dumps(config))

    new = Predictor.from_dir(model_dir, precision="fp32")
    before = Predictor.from_dir(old, precision="fp32")
    assert before.model.wide is None
    ids = [i for i in new.encode(TEXTS) if i is not None]
    with torch.no_grad():
        for a in ids[:10]:
            x, n = torch.from_numpy(a.astype(np.int64))[None], torch.tensor([len(a)])
            want = new.model.probabilities(new.model.deep_logits(x, n))[0].double().numpy()
            np.testing.assert_allclose(before.predict_ids([a])[0], want, rtol=0, atol=1e-6)
