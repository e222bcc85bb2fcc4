"""Per-token attributions for the predicted class: integrated gradients or occlusion.

The score explained is the predicted class's logit, signed so that a positive attribution always
means "toward the predicted class":

* two classes (one logit ``z``, sigmoid): ``z`` when class 1 is predicted, ``-z`` for class 0;
* more classes (softmax): the predicted class's logit.

**Integrated gradients** (IG, :mod:`sparklstm.explain.ig`) integrate the gradient of that score along
the straight line from a baseline to the text's embeddings. The baseline is the all-``<pad>``
sequence of the same length (embedding row 0, zero because ``padding_idx=0``). The integral is a
Gauss-Legendre rule with ``steps`` nodes; the nodes of many texts share batched forward/backward
passes. Completeness: the attributions sum to ``score(text) - score(baseline)``;
:attr:`Explanation.completeness_error` reports how far off they are (a step of the score along the
path is located and attributed, see ig.py).

**Occlusion** replaces one token at a time by ``<unk>``; a token's attribution is the drop in
the score. (A token that is already ``<unk>`` therefore gets 0.)

Only the first ``max_len`` tokens reach the model, so only they get attributions;
:attr:`Explanation.truncated` counts the rest.

The model runs in eval mode (dropout off). On CUDA, cuDNN's RNN backward refuses eval mode, so the
IG pass runs with cuDNN disabled (``torch.backends.cudnn.flags(enabled=False)``) instead of
switching the model to train mode, which would turn dropout back on.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import SparklstmError
from .ig import DELTA_FLOOR, MAX_TOKENS, class_score, integrated_gradients
from ..text import UNK, tokenize

METHODS = ("ig", "occlusion")
CHUNK = 64  # texts explained together


@dataclass
class Explanation:
    """Attributions of one text for its predicted class.

    ``tokens`` and ``attributions`` cover the first ``max_len`` tokens (what the model reads);
    ``score`` is the signed class logit of the text, ``baseline_score`` that of the all-pad
    baseline (IG only).
    """

    text: str
    tokens: list[str]
    attributions: np.ndarray  # (T,) float64
    label: str
    label_index: int
    probability: float
    method: str
    score: float
    baseline_score: float | None = None
    steps: int | None = None
    truncated: int = 0
    jumps: int = 0  # IG: steps of F along the path located and attributed (see ig.py)

    @property
    def completeness_error(self) -> float | None:
        """IG only: |sum(attributions) - (score - baseline_score)| / |score - baseline_score|
        (the denominator floored at 1e-3: below that the text and the baseline score the same)."""
        if self.baseline_score is None:
            return None
        delta = self.score - self.baseline_score
        return abs(float(self.attributions.sum()) - delta) / max(abs(delta), DELTA_FLOOR)

    def top(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` tokens that push most toward the predicted class (largest attribution first)."""
        order = np.argsort(-self.attributions, kind="stable")[:k]
        return [(self.tokens[i], float(self.attributions[i])) for i in order]


def explain(predictor, text: str, *, method: str = "ig", steps: int = 50) -> Explanation | None:
    """Attributions of one text; None for a null text or one with no tokens.

    Example
    -------
    >>> e = explain(Predictor.from_dir("model/"), "win a free cruise now")   # doctest: +SKIP
    >>> e.label, e.top(2), round(e.completeness_error, 4)                    # doctest: +SKIP
    ('spam', [('free', 2.31), ('win', 1.12)], 0.0003)
    """
    return explain_many(predictor, [text], method=method, steps=steps)[0]


def explain_batch(predictor, texts: Sequence[str | None], *, k: int, method: str = "ig",
                  steps: int = 50) -> list[list[tuple[str, float]] | None]:
    """Top-``k`` ``(token, attribution)`` per text for its predicted class, largest first.

    None for a null or empty text. This is what a batch job adds to each row.

    Example
    -------
    >>> explain_batch(predictor, ["win a free cruise now", None], k=2)   # doctest: +SKIP
    [[('free', 2.31), ('win', 1.12)], None]
    """
    if k < 1:
        raise SparklstmError("k must be >= 1")
    return [e.top(k) if e is not None else None
            for e in explain_many(predictor, texts, method=method, steps=steps)]


def explain_many(predictor, texts: Sequence[str | None], *, method: str = "ig",
                 steps: int = 50) -> list[Explanation | None]:
    """Explanations of many texts, batched (texts of similar length share a pass).

    Example
    -------
    >>> [e.label for e in explain_many(predictor, ["a", "b"])]   # doctest: +SKIP
    ['ham', 'ham']
    """
    if method not in METHODS:
        raise SparklstmError(f"method must be one of {METHODS}, got {method!r}")
    if steps < 1:
        raise SparklstmError("steps must be >= 1")
    texts = list(texts)
    encoded = predictor.encode(texts)
    valid = [i for i, e in enumerate(encoded) if e is not None]
    out: list[Explanation | None] = [None] * len(encoded)
    # Chunks bound the memory of the per-row gradients kept for a chunk (~100 kB a text).
    for start in range(0, len(valid), CHUNK):
        rows = valid[start : start + CHUNK]
        for i, e in zip(rows, _explain_ids(predictor, [texts[i] for i in rows], [encoded[i] for i in rows],
                                          method=method, steps=steps)):
            out[i] = e
    return out


def _explain_ids(predictor, texts: list[str], ids: list[np.ndarray], *, method: str,
                 steps: int) -> list[Explanation]:
    import torch

    # The predicted class is the one the predictor reports (also at bf16/int8 precision); the
    # attributions come from the fp32 network, the only one with gradients.
    probs = predictor.predict_ids(ids)  # (n, C)
    classes = probs.argmax(axis=1)
    model = _fp32_model(predictor)
    if method == "ig":
        with _grad_context(predictor.device):
            paths = integrated_gradients(model, ids, classes, steps=steps, device=predictor.device)
        if getattr(model, "wide", None) is not None:
            _add_wide_shares(model, ids, classes, paths, device=predictor.device)
    else:
        with torch.inference_mode():
            attrs, scores = _occlusion(model, ids, classes, device=predictor.device)
    out = []
    for j, text in enumerate(texts):
        tokens = tokenize(text, lowercase=predictor.vocab.lowercase)
        n, c = len(ids[j]), int(classes[j])
        common = dict(text=text, tokens=tokens[:n], label=predictor.labels[c], label_index=c,
                      probability=float(probs[j, c]), method=method, truncated=len(tokens) - n)
        if method == "ig":
            r = paths[j]
            out.append(Explanation(**common, attributions=r.attributions, score=r.score,
                                   baseline_score=r.baseline_score, steps=steps, jumps=r.jumps))
        else:
            out.append(Explanation(**common, attributions=attrs[j], score=float(scores[j])))
    return out


# ----------------------------------------------------------------------------- occlusion


def _occlusion(model, ids: list[np.ndarray], classes: np.ndarray, *, device: str):
    """(attributions per text (T_i,), score (n,)): the score's drop when each token in turn is
    replaced by <unk>. Row 0 of a text is the text itself, row t + 1 has token t replaced; rows of
    many texts share length-sorted batches of at most MAX_TOKENS padded tokens (forward only)."""
    import torch

    rows = sorted(((i, t) for i in range(len(ids)) for t in range(-1, len(ids[i]))),
                  key=lambda row: len(ids[row[0]]))
    scores = [np.empty(len(a) + 1) for a in ids]
    start = 0
    while start < len(rows):
        end = start + 1
        while end < len(rows) and (end + 1 - start) * len(ids[rows[end][0]]) <= 4 * MAX_TOKENS:
            end += 1
        batch, start = rows[start:end], end
        lengths = np.array([len(ids[i]) for i, _ in batch])
        x = np.zeros((len(batch), lengths.max()), dtype=np.int64)  # (R, T)
        for r, (i, t) in enumerate(batch):
            x[r, : lengths[r]] = ids[i]
            if t >= 0:
                x[r, t] = UNK
        target = torch.tensor([int(classes[i]) for i, _ in batch], device=device)
        s = class_score(model(torch.from_numpy(x).to(device), torch.from_numpy(lengths).to(device)),
                        target).double().cpu().numpy()
        for r, (i, t) in enumerate(batch):
            scores[i][t + 1] = s[r]
    return [s[0] - s[1:] for s in scores], np.array([s[0] for s in scores])


# ----------------------------------------------------------------------------- helpers


def _add_wide_shares(model, ids: list[np.ndarray], classes: np.ndarray, paths, *, device: str):
    """Add the wide path's exact per-token shares to IG's attributions (in place).

    The wide path reads token ids, not embeddings, so along IG's path it is constant and IG
    attributes none of it. Being linear, its terms split exactly: a unigram's to its token, a
    bigram's half to each of its two tokens (WideNgrams.token_contributions). The baseline then
    becomes the all-pad text for the recurrent path and "no features" (the bias) for the wide
    path, and completeness still holds: sum(attributions) = score - baseline_score.
    """
    import torch

    from ..training.data import pad_ids

    lengths = np.array([len(a) for a in ids])
    x = torch.from_numpy(pad_ids(ids, lengths, np.arange(len(ids)))).to(device)  # (n, T)
    target = torch.from_numpy(classes.astype(np.int64)).to(device)
    binary = model.wide.weight.shape[1] == 1
    column = torch.zeros_like(target) if binary else target
    sign = torch.where(target == 1, 1.0, -1.0) if binary else torch.ones(len(ids), device=device)
    with torch.inference_mode():
        shares = model.wide.token_contributions(x, torch.from_numpy(lengths).to(device), column, sign)
        shares = (shares * model.wide.mix.float()).double().cpu().numpy()  # (n, T)
    for j, r in enumerate(paths):
        extra = shares[j, : lengths[j]]
        r.attributions = r.attributions + extra
        r.baseline_score -= float(extra.sum())


def _grad_context(device: str):
    """Gradients on (even inside a caller's inference_mode); cuDNN off on CUDA (see module doc)."""
    import torch

    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode(False))
    stack.enter_context(torch.enable_grad())
    if str(device).startswith("cuda"):
        stack.enter_context(torch.backends.cudnn.flags(enabled=False))
    return stack


# fp32 copies of int8 predictors' networks (quantized modules have no gradients) and of bf16
# ones whose weights were cast once (Predictor.cast_bf16), freed with their predictor. Other
# bf16 predictors keep fp32 weights (autocast only), so they need no copy.
_FP32: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _fp32_model(predictor):
    if getattr(predictor, "precision", "fp32") != "int8" and not getattr(predictor, "cast_bf16", False):
        return predictor.model
    model = _FP32.get(predictor)
    if model is None:
        model = _FP32[predictor] = predictor.artifact.build_model(device=predictor.device)
    return model
