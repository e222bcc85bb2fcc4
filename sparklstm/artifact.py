"""The model directory: save it, read it (from disk or from broadcast bytes), verify it.

Layout::

    model/
      model.safetensors   weights only (no pickle is ever written or read)
      config.json         format version, model hyperparameters, labels, tokenizer settings,
                          max_len, package version, sha256 of the weights and the vocabulary
      vocab.json          the tokens, id = position (0 = <pad>, 1 = <unk>)
      metrics.json        validation and test metrics of the training run

Scoring rebuilds the network from config.json alone, so a model can't be scored with the wrong
flags. A weights or vocabulary file whose sha256 differs from config.json is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .errors import SparklstmError
from .text import Vocab

FORMAT = "sparklstm-model"
FORMAT_VERSION = 1
WEIGHTS, CONFIG, VOCAB, METRICS = "model.safetensors", "config.json", "vocab.json", "metrics.json"
REQUIRED = (CONFIG, WEIGHTS, VOCAB)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class ModelArtifact:
    """A verified model: its config, vocabulary, labels and weights (CPU tensors)."""

    config: dict
    vocab: Vocab
    state_dict: dict

    @property
    def labels(self) -> list[str]:
        return self.config["labels"]

    @property
    def max_len(self) -> int:
        return self.config["tokenizer"]["max_len"]

    @property
    def model_id(self) -> str:
        """Content hash of the weights: the identity a scoring job pins and caches by."""
        return self.config["sha256"][WEIGHTS]

    def build_model(self, *, device: str = "cpu"):
        """The network in eval mode on ``device``, rebuilt from config.json."""
        from .nn.model import LSTMClassifier

        m = self.config["model"]
        model = LSTMClassifier(
            vocab_size=m["vocab_size"],
            num_classes=len(self.labels),
            cell=m["cell"],
            embed_dim=m["embed_dim"],
            hidden_size=m["hidden_size"],
            num_layers=m["num_layers"],
            dropout=m["dropout"],
            pooling=m.get("pooling", "last"),  # artifacts from before pooling read the last state
            bidirectional=m.get("bidirectional", False),
            bag_of_embeddings=m.get("bag_of_embeddings", False),
            wide=m.get("wide", False),  # artifacts from before the wide path have none
            wide_buckets=m.get("wide_buckets", 262_139),
        )
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise SparklstmError(f"model weights do not match config.json: {first}") from None
        return model.to(device).eval()


def save_model(model_dir: str | Path, *, model, vocab: Vocab, labels: list[str], model_config: dict,
               max_len: int, metrics: dict, extra: dict | None = None) -> Path:
    """Write the model directory; returns its path."""
    from safetensors.torch import save

    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = save(state)
    vocab_bytes = vocab.to_json().encode("utf-8")
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "model": {**model_config, "vocab_size": len(vocab)},
        "labels": list(labels),
        "tokenizer": {"lowercase": vocab.lowercase, "max_len": max_len},
        "sha256": {WEIGHTS: sha256(weights), VOCAB: sha256(vocab_bytes)},
        **(extra or {}),
    }
    (out / WEIGHTS).write_bytes(weights)
    (out / VOCAB).write_bytes(vocab_bytes)
    (out / METRICS).write_text(json.dumps(metrics, indent=2))
    # config.json last: a directory without it is not (yet) a model.
    (out / CONFIG).write_text(json.dumps(config, indent=2))
    return out


def read_config(model_dir: str | Path) -> dict:
    """config.json of a model directory, checked to be a sparklstm config (no weights read)."""
    path = Path(model_dir)
    try:
        config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SparklstmError(f"{path} is not a sparklstm model directory (no {CONFIG})") from None
    except ValueError:
        raise SparklstmError(f"{path / CONFIG} is not valid JSON") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise SparklstmError(f"{path / CONFIG} is not a sparklstm model config")
    return config


def read_model_files(model_dir: str | Path) -> dict[str, bytes]:
    """The raw bytes of the files scoring needs (what the driver broadcasts)."""
    path = Path(model_dir)
    if not path.is_dir():
        raise SparklstmError(f"model directory not found: {path}")
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if missing:
        raise SparklstmError(f"{path} is not a sparklstm model directory (missing {', '.join(missing)})")
    return {name: (path / name).read_bytes() for name in REQUIRED}


def model_from_files(files: dict[str, bytes], *, source: str = "model") -> ModelArtifact:
    """Verify and decode the files of a model directory; never unpickles anything."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        config = json.loads(files[CONFIG])
    except ValueError:
        raise SparklstmError(f"{source}: config.json is not valid JSON") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise SparklstmError(f"{source}: config.json is not a sparklstm model config")
    if config.get("format_version") != FORMAT_VERSION:
        raise SparklstmError(
            f"{source}: model format version {config.get('format_version')} is not supported "
            f"(this sparklstm reads version {FORMAT_VERSION})"
        )
    for name in (WEIGHTS, VOCAB):
        if sha256(files[name]) != config["sha256"].get(name):
            raise SparklstmError(
                f"{source}: {name} does not match the sha256 in config.json (altered or truncated)"
            )
    try:
        state_dict = load(files[WEIGHTS])
    except SafetensorError as e:
        raise SparklstmError(f"{source}: {WEIGHTS} is not readable: {e}") from None
    return ModelArtifact(config=config, vocab=Vocab.from_json(files[VOCAB].decode("utf-8")),
                         state_dict=state_dict)


def load_artifact(model_dir: str | Path) -> ModelArtifact:
    """Read and verify a model directory.

    Example
    -------
    >>> art = load_artifact("model/")            # doctest: +SKIP
    >>> art.labels, art.model_id[:12]            # doctest: +SKIP
    (['ham', 'spam'], '3f1c0a9b2e7d')
    """
    return model_from_files(read_model_files(model_dir), source=str(model_dir))
