"""Local inference: texts -> labels and probabilities, in length-sorted batches.

Used by ``sparklstm predict`` and, inside each Spark Python worker, by the scoring UDF, so the
two give the same results by construction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .artifact import ModelArtifact, load_artifact
from .training.data import pad_ids
from .errors import SparklstmError
from .runtime import tune_allocator

# auto: bf16 where it scores faster than fp32 (device.auto_precision), else fp32.
PRECISIONS = ("auto", "fp32", "bf16", "int8")
# A model batch closes early, once it holds batch_size // 4 rows, when its next row would pad it
# beyond this share of its real tokens. Per-token speed on CPU is nearly flat from 64 to 256
# rows (fp32 -2%, bf16 -5% at 64), while a small buffer cut into full 256-row batches padded
# 1,250 rows of the benchmark corpus by 14.6% (5% with this rule; bench/NOTES.md, "Scoring").
PAD_WASTE = 0.05


def length_batches(lengths: np.ndarray, *, max_rows: int, min_rows: int,
                   waste: float = PAD_WASTE) -> list[tuple[int, int]]:
    """(start, end) slices of ascending ``lengths``: at most ``max_rows`` rows each; past
    ``min_rows`` rows a batch ends where the next row would make its padded size
    (rows x longest) exceed ``(1 + waste)`` x its real tokens.

    Example
    -------
    >>> length_batches(np.array([3, 3, 3, 9, 9]), max_rows=4, min_rows=1)
    [(0, 3), (3, 5)]
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    cuts, start, n = [], 0, len(lengths)
    while start < n:
        end, real = start, 0
        while end < n and end - start < max_rows:
            rows = end - start + 1
            if rows > min_rows and rows * lengths[end] > (1 + waste) * (real + lengths[end]):
                break
            real += int(lengths[end])
            end += 1
        cuts.append((start, end))
        start = end
    return cuts


class Predictor:
    """A loaded model with its vocabulary, ready to score texts.

    ``model`` is the network in eval mode on ``device``: fp32, except int8 (dynamically
    quantized) and bf16 on CPU for nn.LSTM models without the bag of embeddings (weights cast
    once, ``cast_bf16``); explanations always use an fp32 network.

    Example
    -------
    >>> p = Predictor.from_dir("model/")                      # doctest: +SKIP
    >>> p.predict(["win a free cruise now", None])            # doctest: +SKIP
    [{'label': 'spam', 'probability': 0.97, 'probabilities': [0.03, 0.97]}, None]
    """

    def __init__(self, artifact: ModelArtifact, *, device: str = "cpu", batch_size: int = 256,
                 precision: str = "auto"):
        import torch

        from .device import auto_precision

        if precision not in PRECISIONS:
            raise SparklstmError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        precision = auto_precision(precision, device)  # what scores: fp32, bf16 or int8
        if batch_size < 1:
            raise SparklstmError(f"batch_size must be >= 1, got {batch_size}")
        self.artifact = artifact
        self.device = device
        self.batch_size = batch_size
        self.precision = precision
        self.labels = artifact.labels
        self.max_len = artifact.max_len
        self.vocab = artifact.vocab
        # Close model batches early rather than pad them (length_batches) on CPU only. GPUs keep
        # whole batches: there a batch's cost follows its steps more than its rows (bench/gpu.py
        # times both). So does int8: its quantized LSTM allocates per step, and batches of many
        # sizes fragmented the heap that tune_allocator keeps (RSS 963 -> 1,459 MiB measured).
        self.early_close = precision != "int8" and device.startswith("cpu")
        # Denormal floats appear in LSTM states and are ~100x slower on x86; flushing them to
        # zero changes results by < 1e-30.
        torch.set_flush_denormal(True)
        tune_allocator()
        self.model = artifact.build_model(device=device)
        # bf16 on CPU with nn.LSTM: cast the weights once here instead of letting autocast cast
        # them, and each batch's embeddings, in every forward pass. CPU autocast runs every op
        # of this model in bf16 anyway, so the results are bit-identical (a test checks) and
        # scoring is ~4% faster. Everything else keeps autocast, which runs parts of it in
        # fp32: CPU GRUs, peephole cell state, the bag-of-embeddings mean (fp32 embeddings),
        # and sums on CUDA. ``self.model`` is then a bf16 network.
        model_config = artifact.config["model"]
        self.cast_bf16 = (precision == "bf16" and device.startswith("cpu")
                          and model_config["cell"] == "lstm"
                          and not model_config.get("bag_of_embeddings", False))
        if self.cast_bf16:
            self.model = self.model.to(torch.bfloat16)
            if self.model.wide is not None:  # the wide path sums many small terms: kept fp32
                self.model.wide.float()
        if precision == "int8":
            if not device.startswith("cpu"):
                raise SparklstmError("precision int8 (dynamic quantization) runs on CPU only")
            # Weights of nn.LSTM/GRU/Linear stored as int8, activations quantized per batch.
            self.model = torch.ao.quantization.quantize_dynamic(
                self.model, {torch.nn.LSTM, torch.nn.GRU, torch.nn.Linear}, dtype=torch.qint8
            )

    @classmethod
    def from_dir(cls, model_dir: str | Path, *, device: str = "cpu", batch_size: int = 256,
                 precision: str = "auto"):
        return cls(load_artifact(model_dir), device=device, batch_size=batch_size,
                   precision=precision)

    def _autocast(self):
        """bf16 autocast for the forward pass (fp32 weights kept), or a no-op context."""
        import contextlib

        import torch

        if self.precision != "bf16" or self.cast_bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.split(":")[0], dtype=torch.bfloat16)

    def encode(self, texts: Sequence[str | None]) -> list[np.ndarray | None]:
        """Token ids per text; None for a null text or one with no tokens (empty, whitespace)."""
        out = []
        for text in texts:
            ids = self.vocab.encode(text, max_len=self.max_len) if isinstance(text, str) else None
            out.append(ids if ids is not None and len(ids) else None)
        return out

    def predict_ids(self, ids: list[np.ndarray]) -> np.ndarray:
        """Probabilities (N, C) for non-empty id arrays, batched by similar length.

        Sorting by length keeps padding small; each batch is padded only to its own longest
        row (and closed early when that would waste more than PAD_WASTE), and padding never
        changes a row's result (see nn/model.py).
        """
        import torch

        n = len(ids)
        probs = np.empty((n, len(self.labels)), dtype=np.float64)
        if n == 0:
            return probs
        lengths = np.fromiter((len(a) for a in ids), dtype=np.int64, count=n)
        order = np.argsort(lengths, kind="stable")
        min_rows = max(1, self.batch_size // 4) if self.early_close else self.batch_size
        batches = length_batches(lengths[order], max_rows=self.batch_size, min_rows=min_rows)
        with torch.inference_mode(), self._autocast():
            for start, end in batches:
                rows = order[start:end]
                x = torch.from_numpy(pad_ids(ids, lengths, rows)).to(self.device)  # (b, T)
                lens = torch.from_numpy(lengths[rows]).to(self.device)
                p = self.model.probabilities(self.model(x, lens))  # (b, C)
                probs[rows] = p.double().cpu().numpy()
        return probs

    def predict_arrays(self, texts: Sequence[str | None]):
        """(valid mask (N,), label index (N,), probabilities (N, C)); invalid rows are NaN/-1."""
        encoded = self.encode(texts)
        valid = np.array([e is not None for e in encoded], dtype=bool)
        probs = np.full((len(encoded), len(self.labels)), np.nan)
        probs[valid] = self.predict_ids([e for e in encoded if e is not None])
        label_idx = np.full(len(encoded), -1, dtype=np.int64)
        label_idx[valid] = probs[valid].argmax(axis=1)
        return valid, label_idx, probs

    def predict(self, texts: Sequence[str | None]) -> list[dict | None]:
        """One ``{label, probability, probabilities}`` per text; None for null/empty texts."""
        valid, label_idx, probs = self.predict_arrays(texts)
        return [
            {
                "label": self.labels[k],
                "probability": float(p[k]),
                "probabilities": [float(x) for x in p],
            }
            if ok
            else None
            for ok, k, p in zip(valid, label_idx, probs)
        ]
