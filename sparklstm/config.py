"""Dataclass configs and TOML loading with strict overrides.

Precedence: dataclass defaults < TOML file (``conf/default.toml`` or ``--config``) < CLI flags.
Unknown sections or keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SparklstmError


@dataclass
class PrepConfig:
    text_col: str = "text"
    label_col: str = "label"
    lowercase: bool = True
    max_len: int = 256  # tokens kept per text (the head of the text)
    min_freq: int = 2  # a token must occur this often in the corpus to enter the vocabulary
    max_vocab: int = 30000  # including the two reserved ids (0 = pad, 1 = unk)
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 42  # the hash seed of the text -> split assignment


@dataclass
class ModelConfig:
    cell: str = "lstm"  # lstm | peephole | gru
    embed_dim: int = 128
    hidden_size: int = 128
    num_layers: int = 2
    dropout: float = 0.2  # on the embeddings, between layers and before the dense layer
    # last | max | mean | concat (last, max and mean side by side). concat measured best on the
    # many-class corpus (bench/NOTES.md, "Accuracy on real data") and within noise on spam.
    pooling: str = "concat"
    # A second stack reads each row's real tokens backwards: +2.3 points of macro-F1 on the
    # 9-class corpus, +1.5 on spam (bench/NOTES.md, "Accuracy on real data"), at twice the compute.
    bidirectional: bool = True
    bag_of_embeddings: bool = False  # the mean of the token embeddings joins the pooled states
    # TF-IDF word unigrams + hashed bigrams into a linear layer, fitted first as logistic
    # regression and mixed with the recurrent path's logits (sparklstm/nn/wide.py).
    wide: bool = True
    wide_buckets: int = 262_139  # bigram hash buckets (a prime)


@dataclass
class TrainConfig:
    epochs: int = 10  # with the wide path the mix peaked by epoch 5-8 of 15 on the 9-class corpus
    # Real tokens the optimizer may read over all epochs: a larger train split runs fewer epochs
    # (at least one), so training time stops growing with corpus size. 16M tokens is ~10 min of
    # epochs for the default model on 2 idle cores (26.7k tokens/s with validation passes, sotu),
    # leaving room for the wide fit within 15 min at 50,000 documents (bench/train_time.py); the
    # 9-class sotu corpus (1.6M train tokens) still gets all 10 epochs. 0 = no budget.
    token_budget: int = 16_000_000
    batch_size: int = 64
    # A higher start decayed to 0 (cosine) beat a constant 1e-3 by 6-8 points of macro-F1 on the
    # 9-class corpus, which was still improving at epoch 15 with 1e-3 (bench/NOTES.md, "Accuracy").
    lr: float = 3e-3
    lr_schedule: str = "cosine"  # constant | cosine (per step, from lr to 0 over all epochs)
    class_weights: str = "none"  # none | balanced (loss weight n / (C * n_c): rare classes count more)
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    patience: int = 4  # epochs without a better validation macro-F1 before stopping
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # Denormals are ~100x slower on x86; flushing gained nothing on the idle VM but 6.8x under
    # load in one early run (bench/NOTES.md, "Training throughput"), and changes results < 1e-30.
    flush_denormal: bool = True
    # auto: bf16 autocast (fp32 master weights) where it is faster than fp32 (device.auto_precision:
    # a GPU with bf16, or a CPU where a timed GEMM says so), else fp32; ~2.4x the tokens/s on the
    # AMD EPYC at the same accuracy, 0.72-0.88x on an Intel Xeon without AMX (docs/benchmarks.md).
    precision: str = "auto"  # auto | fp32 | bf16
    num_threads: int = 0  # 0 = torch's default in one process, 1 per rank with several
    # Data-parallel ranks (DDP) on this machine; 0 = auto (training/distributed.py,
    # default_processes: one per core, at most batch_size / 32, one on a GPU).
    processes: int = 0
    # A train split with more rows is streamed from its Parquet shards through a shuffle buffer of
    # this many rows (~1 KB each at max_len 256); smaller splits are read whole and fully shuffled.
    shuffle_buffer_rows: int = 500_000


@dataclass
class ScoreConfig:
    text_col: str = "text"
    pred_col: str = "prediction"
    batch_size: int = 256  # rows per forward pass
    device: str = "auto"  # auto (the task's GPU if Spark assigned one, else CPU) | cpu | cuda
    # auto: bf16 where it is faster than fp32 (a GPU with bf16; on a CPU a GEMM timed once per
    # process decides: device.auto_precision), else fp32. bf16 labels agreed with fp32's on >= 99.95% of the rows of
    # every bench corpus (docs/benchmarks.md, "Scoring precision").
    precision: str = "auto"  # auto | fp32 | bf16 (autocast) | int8 (dynamic quantization, CPU)


@dataclass
class Config:
    prep: PrepConfig = field(default_factory=PrepConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)


CHOICES = {
    ("model", "cell"): ("lstm", "peephole", "gru"),
    ("model", "pooling"): ("last", "max", "mean", "concat"),
    ("train", "device"): ("auto", "cpu", "cuda"),
    ("train", "precision"): ("auto", "fp32", "bf16"),
    ("train", "lr_schedule"): ("constant", "cosine"),
    ("train", "class_weights"): ("none", "balanced"),
    ("score", "device"): ("auto", "cpu", "cuda"),
    ("score", "precision"): ("auto", "fp32", "bf16", "int8"),
}


def _coerce(section: str, key: str, value: Any, default: Any) -> Any:
    want = type(default)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not want:
        raise SparklstmError(
            f"config [{section}] {key}: expected {want.__name__}, got {value!r}"
        )
    allowed = CHOICES.get((section, key))
    if allowed and value not in allowed:
        raise SparklstmError(f"config [{section}] {key}: {value!r} is not one of {allowed}")
    return value


def apply_overrides(config: Config, overrides: dict[str, dict[str, Any]]) -> Config:
    """Return a copy of ``config`` with ``{section: {key: value}}`` applied; ``None`` values are skipped."""
    sections = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    updated = {}
    for section, values in overrides.items():
        if section not in sections:
            raise SparklstmError(f"config: unknown section [{section}] (known: {sorted(sections)})")
        current = sections[section]
        known = {f.name for f in dataclasses.fields(current)}
        changes = {}
        for key, value in values.items():
            if key not in known:
                raise SparklstmError(f"config [{section}]: unknown key {key!r} (known: {sorted(known)})")
            if value is not None:
                changes[key] = _coerce(section, key, value, getattr(current, key))
        updated[section] = dataclasses.replace(updated.get(section, current), **changes)
    return dataclasses.replace(config, **updated)


def load_config(*, path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Defaults, then the TOML file at ``path`` (if any), then ``overrides``.

    Example
    -------
    >>> load_config(overrides={"train": {"epochs": 3}}).train.epochs
    3
    """
    config = Config()
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise SparklstmError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as e:
            raise SparklstmError(f"config file {path} is not valid TOML: {e}") from None
        for section, values in data.items():
            if not isinstance(values, dict):
                raise SparklstmError(f"config file {path}: {section!r} must be a [section]")
        config = apply_overrides(config, data)
    return apply_overrides(config, overrides or {})


def as_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def add_score_arguments(parser) -> None:
    """The scoring options shared by the spark-submit jobs (jobs/score.py, jobs/score_stream.py)."""
    parser.add_argument("--text-col")
    parser.add_argument("--pred-col")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--device", help="auto | cpu | cuda")
    parser.add_argument("--precision", help="auto | fp32 | bf16 | int8")
    parser.add_argument("--config", help="a TOML file (conf/default.toml's layout)")


def score_config_from_args(args) -> ScoreConfig:
    """ScoreConfig from defaults < --config TOML < the job's flags."""
    return load_config(path=args.config, overrides={"score": {
        "text_col": args.text_col, "pred_col": args.pred_col, "batch_size": args.batch_size,
        "device": args.device, "precision": args.precision}}).score
