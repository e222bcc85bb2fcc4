"""The wide path: TF-IDF of word unigrams and hashed bigrams into a linear layer.

What TF-IDF + logistic regression has, inside the model: the recurrent path reads word order,
this path reads which words and word pairs occur, weighted as scikit-learn's
``TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)`` weights them:

    value(row, f) = (1 + ln tf) * idf(f),   idf(f) = ln((1 + N) / (1 + df(f))) + 1,

then each row is scaled to unit L2 norm. Features are computed from token ids, so prep, the
artifact's inputs and every scoring path are unchanged:

* unigram ``f = id`` (ids 0..V-1; ``<pad>`` never occurs in a row's real tokens);
* bigram ``f = V + (a * 1_000_003 + b) mod buckets`` (``buckets`` is prime, so pairs spread
  over all buckets).

``idf`` is 0 for a feature seen in fewer than ``MIN_DF`` training documents: such a feature is
dropped (it adds nothing to the norm), as min_df drops it from the vectorizer's vocabulary.

The weights are fitted before the recurrent path is trained, as the convex problem that logistic
regression solves (:func:`fit_wide`: full-batch L-BFGS, L2 strength picked on validation), and
held fixed afterwards; ``mix`` weighs the two paths' logits (picked on validation after training,
see train.py).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

MIN_DF = 2  # a feature must occur in this many training documents (TfidfVectorizer's min_df)
PAIR_PRIME = 1_000_003  # a bigram (a, b) hashes as a * PAIR_PRIME + b, mod buckets
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # inverse L2 strengths, as bench/accuracy.py's baseline


def pair_features(ids: torch.Tensor, *, vocab_size: int, buckets: int) -> torch.Tensor:
    """(B, T-1) bigram feature ids of adjacent tokens: V + (a * PAIR_PRIME + b) mod buckets."""
    return vocab_size + (ids[:, :-1] * PAIR_PRIME + ids[:, 1:]) % buckets


def ngram_counts(ids: torch.Tensor, lengths: torch.Tensor, *, vocab_size: int, buckets: int):
    """The distinct features of each row and their counts.

    ids: (B, T) int64 right-padded; lengths: (B,). Returns (rows (K,), features (K,), counts (K,)),
    sorted by row then feature, one entry per distinct (row, feature).
    """
    B, T = ids.shape
    lengths = lengths.to(ids.device)
    real = torch.arange(T, device=ids.device)[None, :] < lengths[:, None]  # (B, T)
    row = torch.arange(B, device=ids.device)[:, None].expand(B, T)  # (B, T)
    pairs = pair_features(ids, vocab_size=vocab_size, buckets=buckets)  # (B, T-1)
    pair_real = real[:, 1:]  # both tokens of the pair are real
    feats = torch.cat([ids[real], pairs[pair_real]])  # (K',)
    rows = torch.cat([row[real], row[:, 1:][pair_real]])
    n = vocab_size + buckets
    keys, counts = torch.unique(rows * n + feats, return_counts=True)  # sorted
    return keys // n, keys % n, counts


def tfidf_values(rows, feats, counts, idf: torch.Tensor, batch: int) -> torch.Tensor:
    """(K,) L2-normalised sublinear TF-IDF values of the entries of :func:`ngram_counts`."""
    values = (1.0 + torch.log(counts.to(idf.dtype))) * idf[feats]  # (K,)
    norm2 = torch.zeros(batch, dtype=idf.dtype, device=idf.device).index_add_(0, rows, values * values)
    return values / norm2.sqrt().clamp(min=1e-12)[rows]


class WideNgrams(nn.Module):
    """TF-IDF unigrams + hashed bigrams -> logits (B, out). Unfitted, it outputs zeros.

    Example
    -------
    >>> w = WideNgrams(vocab_size=10, buckets=7, out_features=3)
    >>> w(torch.tensor([[2, 3, 4], [5, 0, 0]]), torch.tensor([3, 1])).shape
    torch.Size([2, 3])
    """

    def __init__(self, *, vocab_size: int, buckets: int, out_features: int):
        super().__init__()
        self.vocab_size, self.buckets = vocab_size, buckets
        n = vocab_size + buckets
        self.weight = nn.Parameter(torch.zeros(n, out_features))  # (V + buckets, out)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.register_buffer("idf", torch.zeros(n))  # 0 = feature not used
        # The share of this path in the model's logits, picked on validation after training.
        self.register_buffer("mix", torch.tensor(0.5))

    def features(self, ids: torch.Tensor, lengths: torch.Tensor):
        """(rows (K,), features (K,), values (K,)): the rows' TF-IDF vectors, sparse."""
        rows, feats, counts = ngram_counts(ids, lengths, vocab_size=self.vocab_size,
                                           buckets=self.buckets)
        return rows, feats, tfidf_values(rows, feats, counts, self.idf.float(), ids.shape[0])

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # Always fp32: a bf16 sum over a few hundred features would lose the small weights.
        rows, feats, values = self.features(ids, lengths)
        weight = self.weight.float()
        out = self.bias.float().expand(ids.shape[0], -1).clone()  # (B, out)
        return out.index_add_(0, rows, weight[feats] * values[:, None])

    def mixed(self, deep: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(1 - mix) * deep + mix * wide logits, in fp32. deep: (B, out)."""
        mix = self.mix.float()
        return (1.0 - mix) * deep.float() + mix * self(ids, lengths)

    def token_contributions(self, ids: torch.Tensor, lengths: torch.Tensor,
                            column: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        """(B, T): each real token's exact share of ``sign * (logits[:, column] - bias)``.

        A unigram's term goes to each of its occurrences in equal parts, a bigram's to the two
        tokens of each occurrence in equal parts, so the shares sum to the path's logit minus
        its bias (the logit of a text with no features). ``column``, ``sign``: (B,).
        """
        B, T = ids.shape
        rows, feats, values = self.features(ids, lengths)
        n = self.vocab_size + self.buckets
        term = self.weight.float()[feats, column[rows]] * values * sign[rows].float()  # (K,)
        # Spread each (row, feature) term over its occurrences: look every position's feature up
        # in the sorted (row, feature) keys.
        table_keys = rows * n + feats  # sorted
        real = torch.arange(T, device=ids.device)[None, :] < lengths.to(ids.device)[:, None]
        row = torch.arange(B, device=ids.device)[:, None].expand(B, T)
        pairs = pair_features(ids, vocab_size=self.vocab_size, buckets=self.buckets)
        out = torch.zeros(B, T, dtype=torch.float32, device=ids.device)
        for pos_feats, mask, spans in ((ids, real, (0,)), (pairs, real[:, 1:], (0, 1))):
            k = torch.searchsorted(table_keys, (row[:, :pos_feats.shape[1]] * n + pos_feats)[mask])
            share = term[k]  # (occurrences,)
            occurrences = torch.zeros_like(term).index_add_(0, k, torch.ones_like(share))
            share = share / occurrences[k] / len(spans)
            r, t = mask.nonzero(as_tuple=True)
            for shift in spans:
                out.index_put_((r, t + shift), share, accumulate=True)
        return out


@dataclass
class WideFit:
    """What :func:`fit_wide` chose: the L2 strength, its validation score, the grid."""

    C: float
    val_macro_f1: float | None
    grid: list
    seconds: float


def split_tensors(split, *, batch_size: int = 512):
    """(ids (B, T), lengths (B,), labels (B,)) batches of a split, in a fixed order."""
    from ..training.data import pad_batch

    for part, rows in split.batches(batch_size=batch_size, rng=None):
        yield pad_batch(part, rows)


def csr_features(wide: WideNgrams, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """(TF-IDF matrix (N, features) sparse CSR, labels (N,)) of ``(ids, lengths, labels)`` batches,
    rows in batch order."""
    rows, cols, vals, labels, offset = [], [], [], [], 0
    for ids, lengths, y in batches:
        r, f, v = wide.features(ids, lengths)
        rows.append(r + offset)
        cols.append(f)
        vals.append(v)
        labels.append(y)
        offset += ids.shape[0]
    n = wide.vocab_size + wide.buckets
    if not labels:
        empty = torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.int64), torch.zeros(0), size=(0, n))
        return empty.to_sparse_csr(), torch.zeros(0, dtype=torch.int64)
    coo = torch.sparse_coo_tensor(torch.stack([torch.cat(rows), torch.cat(cols)]),
                                  torch.cat(vals).float(), size=(offset, n), check_invariants=False)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the ops used here are basic
        warnings.simplefilter("ignore", UserWarning)
        return coo.coalesce().to_sparse_csr(), torch.cat(labels)


def document_frequencies(wide: WideNgrams, batches) -> tuple[torch.Tensor, int]:
    """(df (features,), documents) over ``(ids, lengths, labels)`` batches of the train split."""
    df = torch.zeros(wide.vocab_size + wide.buckets, dtype=torch.int64)
    docs = 0
    for ids, lengths, _ in batches:
        _, feats, _ = ngram_counts(ids, lengths, vocab_size=wide.vocab_size, buckets=wide.buckets)
        df += torch.bincount(feats, minlength=len(df))  # one entry per (row, feature)
        docs += ids.shape[0]
    return df, docs


def set_idf(wide: WideNgrams, df: torch.Tensor, docs: int) -> None:
    idf = torch.log((1.0 + docs) / (1.0 + df.double())) + 1.0
    wide.idf.copy_(torch.where(df >= MIN_DF, idf, torch.zeros_like(idf)).float())


def _objective(x, xt, y, weight, bias, C: float, binary: bool):
    """Logistic regression's loss mean(CE) + ||W||^2 / (2 C N), and its gradients."""
    n = x.shape[0]
    logits = torch.sparse.mm(x, weight) + bias  # (N, out)
    if binary:
        yf = y.float()[:, None]
        loss = F.binary_cross_entropy_with_logits(logits, yf, reduction="sum")
        residual = torch.sigmoid(logits) - yf  # (N, 1)
    else:
        loss = F.cross_entropy(logits, y, reduction="sum")
        residual = torch.softmax(logits, dim=1)
        residual[torch.arange(n), y] -= 1.0  # (N, C): p - onehot(y)
    reg = 1.0 / (C * n)
    loss = loss / n + 0.5 * reg * weight.pow(2).sum()
    grad_w = torch.sparse.mm(xt, residual) / n + reg * weight
    return loss, grad_w, residual.mean(dim=0)


def fit_logistic(x, y, *, out_features: int, C: float, init=None, max_iter: int = 100):
    """(weight, bias) minimising L2-regularised logistic loss on sparse ``x`` (N, F); ``y`` (N,).

    One logit with sigmoid for ``out_features == 1`` (two classes), softmax otherwise, as the
    model's head. Full-batch L-BFGS with a strong-Wolfe line search.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        xt = x.to_sparse_coo().t().coalesce().to_sparse_csr()  # (F, N) for the gradient X^T r
    weight = torch.zeros(x.shape[1], out_features) if init is None else init[0].clone()
    bias = torch.zeros(out_features) if init is None else init[1].clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=10,
                            tolerance_grad=1e-7, tolerance_change=1e-10,
                            line_search_fn="strong_wolfe")

    def closure():
        with torch.no_grad():
            loss, gw, gb = _objective(x, xt, y, weight, bias, C, out_features == 1)
        weight.grad, bias.grad = gw, gb
        return loss

    opt.step(closure)
    return weight.detach(), bias.detach()


def sparse_logits(x, weight, bias) -> torch.Tensor:
    return torch.sparse.mm(x, weight) + bias


def compact_columns(x: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
    """``x`` (N, F) CSR restricted to the ``used`` feature ids (U,), renumbered 0..U-1.

    Features with idf 0 have value 0 everywhere; dropping their columns shrinks every vector
    L-BFGS keeps (about 2.7x on the 9-class corpus)."""
    remap = torch.full((x.shape[1],), -1, dtype=torch.int64)
    remap[used] = torch.arange(len(used))
    col, val, crow = remap[x.col_indices()], x.values(), x.crow_indices()
    keep = col >= 0  # zero-valued entries of unused features (never produced, but be safe)
    rows = torch.repeat_interleave(torch.arange(x.shape[0]), crow.diff())[keep]
    coo = torch.sparse_coo_tensor(torch.stack([rows, col[keep]]), val[keep],
                                  size=(x.shape[0], len(used)), check_invariants=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return coo.coalesce().to_sparse_csr()


def fit_wide(wide: WideNgrams, *, train_split, val_split, num_classes: int,
             grid: tuple = C_GRID, max_iter: int = 100, log=print) -> WideFit:
    """Fit ``wide`` in place: idf from the train split, then logistic regression for each C of
    ``grid`` (warm-started from the previous C), keeping the C with the best validation
    macro-F1 (the smaller C on ties). Without validation rows, C = 10.

    ``max_iter`` L-BFGS iterations per C: on the 9-class corpus 60 and 100 gave the validation
    and test macro-F1 of 300 (within 0.002) in 43% and 40% of the time (bench/NOTES.md)."""
    import time

    from ..metrics import confusion_matrix, report

    started = time.perf_counter()
    df, docs = document_frequencies(wide, split_tensors(train_split))
    set_idf(wide, df, docs)
    used = torch.nonzero(wide.idf > 0)[:, 0]  # (U,)
    x_train, y_train = csr_features(wide, split_tensors(train_split))
    x_val, y_val = csr_features(wide, split_tensors(val_split))
    x_train, x_val = compact_columns(x_train, used), compact_columns(x_val, used)
    out = wide.weight.shape[1]
    if len(y_val) == 0:
        grid = (10.0,)
    results, init, best = [], None, None
    for C in grid:
        init = fit_logistic(x_train, y_train, out_features=out, C=C, init=init, max_iter=max_iter)
        f1 = None
        if len(y_val):
            pred = predicted(sparse_logits(x_val, *init))
            f1 = report(confusion_matrix(y_val.numpy(), pred.numpy(), num_classes),
                        [str(i) for i in range(num_classes)])["macro_f1"]
        results.append({"C": C, "val_macro_f1": f1})
        if best is None or (f1 is not None and f1 > best[1]):
            best = (C, f1, init)
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[used] = best[2][0]
        wide.bias.copy_(best[2][1])
    seconds = time.perf_counter() - started
    log(f"wide path: {len(used):,} TF-IDF features of {docs:,} train texts, C = {best[0]:g}"
        + (f" (val macro-F1 {best[1]:.4f})" if best[1] is not None else "") + f", {seconds:.1f} s")
    return WideFit(C=best[0], val_macro_f1=best[1], grid=results, seconds=round(seconds, 2))


MIX_GRID = tuple(i / 20 for i in range(21))  # 0 = the recurrent path alone, 1 = the wide path alone


def predicted(logits: torch.Tensor) -> torch.Tensor:
    """Class index (N,) from logits (N, 1) (sigmoid) or (N, C) (softmax)."""
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)


def nll(logits: torch.Tensor, y: torch.Tensor) -> float:
    if logits.shape[1] == 1:
        return float(F.binary_cross_entropy_with_logits(logits[:, 0], y.float()))
    return float(F.cross_entropy(logits, y))


def choose_mix(deep: torch.Tensor, wide: torch.Tensor, y: torch.Tensor, *, num_classes: int,
               grid: tuple = MIX_GRID) -> tuple[float, float]:
    """(mix, macro-F1): the weight of the wide path's logits with the lowest log loss on (val)
    rows, and the macro-F1 of the mixed logits there (by which train() keeps or drops the epoch).

    deep, wide: (N, out) logits; y: (N,); ties go to the larger weight of the wide path (the
    fitted logistic regression). Log loss and not macro-F1 picks the weight: on a validation
    split of a few hundred rows macro-F1 moves in steps of one row, and over 21 weights and 10
    epochs a lucky step wins (replayed on recorded logits, bench/selection.py: picking by
    smoothed macro-F1 scored below picking by log loss on every corpus, and on spam below the
    wide path alone). Log loss is smooth in the weight and uses every row's confidence.
    """
    from ..metrics import confusion_matrix, report

    losses = [nll((1 - m) * deep + m * wide, y) for m in grid]
    best = min(range(len(grid)), key=lambda i: (losses[i], -grid[i]))
    logits = (1 - grid[best]) * deep + grid[best] * wide
    cm = confusion_matrix(y.numpy(), predicted(logits).numpy(), num_classes)
    return grid[best], report(cm, [str(i) for i in range(num_classes)])["macro_f1"]
