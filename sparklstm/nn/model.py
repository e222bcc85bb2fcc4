"""LSTMClassifier: Embedding -> stacked recurrent layers -> Dense, and the peephole LSTM layer.

Three cells share one classifier:

* ``lstm``     : ``nn.LSTM`` (cuDNN on GPU, oneDNN on CPU), the default.
* ``peephole`` : :class:`PeepholeLSTM`, the seed's equations (gates read c_{t-1}), with a
                 hand-written backward through time (``peephole.py``).
* ``gru``      : ``nn.GRU``.

Padding never changes a prediction: each stack is unidirectional over right-padded rows (the
``bidirectional`` one reads each row's real tokens last-to-first, padding still after them), and
the classifier reads the states of each sequence's real tokens only -- the state at its last real
token (``pooling="last"``), their element-wise maximum or mean (``"max"``, ``"mean"``), or all
three side by side (``"concat"``) -- so steps after the last real token (padding) are never
looked at.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from sparklstm.nn.peephole import peephole_layer_time_major
from sparklstm.nn.wide import WideNgrams

CELLS = ("lstm", "peephole", "gru")
POOLINGS = ("last", "max", "mean", "concat")


class PeepholeLSTM(nn.Module):
    """One LSTM layer with peephole connections, batch-first.

    The seed's equations (``W_c*`` are per-unit vectors, ``∘`` is the element-wise product)::

        i_t = σ(W_xi x_t + W_hi h_{t-1} + W_ci ∘ c_{t-1} + b_i)
        f_t = σ(W_xf x_t + W_hf h_{t-1} + W_cf ∘ c_{t-1} + b_f)
        o_t = σ(W_xo x_t + W_ho h_{t-1} + W_co ∘ c_{t-1} + b_o)
        c_t = f_t ∘ c_{t-1} + i_t ∘ tanh(W_xc x_t + W_hc h_{t-1} + b_c)
        h_t = o_t ∘ tanh(c_t)

    Weights are stacked in ``nn.LSTM``'s gate order (i, f, g=c, o), so with zero peephole
    weights the layer computes exactly what ``nn.LSTM`` computes with
    ``weight_ih_l0 = weight_ih``, ``weight_hh_l0 = weight_hh`` and ``bias_ih_l0 + bias_hh_l0 = bias``.

    The computation lives in :mod:`sparklstm.nn.peephole` (one matmul for all steps' input
    projections, a lean step loop, a custom autograd Function with backward through time); the
    output is a transposed view of a time-major buffer, as ``nn.LSTM``'s batch-first output is.

    Example
    -------
    >>> layer = PeepholeLSTM(8, 16)
    >>> layer(torch.randn(2, 5, 8)).shape
    torch.Size([2, 5, 16])
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))  # W_x{i,f,c,o}
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))  # W_h{i,f,c,o}
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))  # b_{i,f,c,o}
        self.weight_peep = nn.Parameter(torch.empty(3, hidden_size))  # rows: W_ci, W_cf, W_co
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.LSTM's initialisation, applied to every weight including the peepholes.
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, D) -> h for every step: (B, T, H), h_0 = c_0 = 0.
        return self.forward_time_major(x.transpose(0, 1)).transpose(0, 1)

    def forward_time_major(self, x: torch.Tensor) -> torch.Tensor:
        # x: (T, B, D) -> (T, B, H). The input projections of all steps are one matmul; the
        # recurrence has a hand-written backward through time (peephole.py).
        return peephole_layer_time_major(x, self.weight_ih, self.weight_hh, self.bias,
                                         self.weight_peep)


def locked_dropout(x: torch.Tensor, p: float, *, steps_dim: int) -> torch.Tensor:
    """Dropout with one mask per sequence, shared by every step (AWD-LSTM's variational dropout).

    ``x`` has its steps along ``steps_dim``; the mask has size 1 there, so it draws B*D random
    numbers where element-wise dropout draws T*B*D. Call it in training only.
    """
    shape = list(x.shape)
    shape[steps_dim] = 1  # (B, 1, D) batch-first, (1, B, D) time-major
    keep = 1.0 - p
    return x * x.new_empty(shape).bernoulli_(keep).div_(keep)


# An nn.LSTM/nn.GRU stack stores its weights under a multi-layer module's names (weight_ih_l1,
# ...), as models were stored before the stack ran one module per layer (layers.1.weight_ih_l0):
# models and checkpoints stay readable by older sparklstm versions, and theirs by this one.
_MULTI = re.compile(r"((?:weight|bias)_(?:ih|hh))_l(\d+)")
_PER_LAYER = re.compile(r"layers\.(\d+)\.((?:weight|bias)_(?:ih|hh))_l0")


def _multilayer_names(module, state_dict, prefix, local_metadata) -> None:
    """state_dict() post-hook: ``layers.1.weight_ih_l0`` -> ``weight_ih_l1``."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        m = _PER_LAYER.fullmatch(key[len(prefix):])
        if m:
            state_dict[f"{prefix}{m[2]}_l{m[1]}"] = state_dict.pop(key)


def _per_layer_names(module, state_dict, prefix, *args) -> None:
    """load_state_dict() pre-hook: ``weight_ih_l1`` -> ``layers.1.weight_ih_l0``."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        m = _MULTI.fullmatch(key[len(prefix):])
        if m:
            state_dict[f"{prefix}layers.{m[2]}.{m[1]}_l0"] = state_dict.pop(key)


class RecurrentStack(nn.Module):
    """``num_layers`` recurrent layers of one cell, batch-first outside, time-major inside, with
    dropout between layers.

    One module per layer (nn.LSTM, nn.GRU or PeepholeLSTM) rather than ``nn.LSTM(num_layers=2,
    dropout=p)``, so the dropout between layers can be locked: one mask per sequence, as on the
    embeddings. nn.LSTM's built-in dropout draws a Bernoulli number for every (t, b, h); on CPU
    that draw alone took 13% of a bf16 training step. ``dropout_style="element"`` keeps the
    per-element dropout (``bench/train.py``'s textbook baseline). In eval mode both are the
    identity, and the layers compute what a multi-layer nn.LSTM/nn.GRU computes (bit for bit on
    CPU); the weights keep that module's names in the state dict.
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int,
                 dropout: float, *, dropout_style: str = "locked"):
        super().__init__()
        make = {"lstm": nn.LSTM, "gru": nn.GRU, "peephole": PeepholeLSTM}[cell]
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        self.layers = nn.ModuleList(make(s, hidden_size) for s in sizes)
        self.dropout, self.dropout_style = dropout, dropout_style
        if cell != "peephole":  # PeepholeLSTM stacks were always stored per layer
            self.register_state_dict_post_hook(_multilayer_names)
            self.register_load_state_dict_pre_hook(_per_layer_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, T, D) -> (B, T, H); time-major inside, so each step's rows are contiguous and the
        # layers pass (T, B, H) buffers to each other without transposing.
        x = x.transpose(0, 1)  # (T, B, D) view
        for n, layer in enumerate(self.layers):
            if n > 0 and self.training and self.dropout > 0:
                if self.dropout_style == "locked":
                    x = locked_dropout(x, self.dropout, steps_dim=0)
                else:
                    x = F.dropout(x, self.dropout, training=True)
            if isinstance(layer, PeepholeLSTM):
                x = layer.forward_time_major(x)  # (T, B, H)
            else:
                x = layer(x)[0]  # (T, B, H); nn.LSTM/GRU default to time-major
        return x.transpose(0, 1)


def real_steps(T: int, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: True at each row's real (non-padding) steps."""
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x: torch.Tensor, real: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, D): the mean over each row's real steps (``real`` (B, T), ``lengths`` (B,))."""
    summed = (x * real[..., None].to(x.dtype)).sum(dim=1)  # (B, D)
    return summed / lengths.clamp(min=1)[:, None].to(x.dtype)


def reverse_rows(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's first ``lengths[b]`` steps in reverse order, padding (zeros) kept after them.

    x: (B, T, E) right-padded; returns (B, T, E) with out[b, t] = x[b, lengths[b] - 1 - t].
    """
    B, T, E = x.shape
    steps = torch.arange(T, device=x.device)[None, :]  # (1, T)
    lengths = lengths.to(x.device)[:, None]  # (B, 1)
    # Whole E-vectors picked by one flat row index each: ~5x faster than gather, which reads an
    # index per element (measured at B=256, T=200, E=128: 4.4 vs 24 ms; with backward 13 vs 55).
    # Clamped to the row, so a length beyond T cannot read the next row.
    src = (lengths - 1 - steps).clamp(min=0, max=T - 1) + torch.arange(B, device=x.device)[:, None] * T
    out = x.reshape(B * T, E).index_select(0, src.view(-1)).view(B, T, E)
    return out * (steps < lengths)[..., None].to(x.dtype)


class LSTMClassifier(nn.Module):
    """Embedding(vocab, E) -> ``num_layers`` x recurrent(H) -> Dense.

    Two classes give one logit (sigmoid + binary cross-entropy); more give one logit per class
    (softmax + cross-entropy).

    Example
    -------
    >>> m = LSTMClassifier(vocab_size=100, num_classes=3)
    >>> m(torch.tensor([[5, 6, 7], [8, 0, 0]]), torch.tensor([3, 1])).shape
    torch.Size([2, 3])
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        num_classes: int,
        cell: str = "lstm",
        embed_dim: int = 128,
        hidden_size: int = 128,
        num_layers: int = 2,
        dropout: float = 0.2,
        pooling: str = "concat",
        dropout_style: str = "locked",
        bidirectional: bool = True,
        bag_of_embeddings: bool = False,
        wide: bool = False,
        wide_buckets: int = 262_139,
    ):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        if dropout_style not in ("locked", "element"):
            raise ValueError(f"dropout_style must be locked or element, got {dropout_style!r}")
        # Training only, no effect on a trained model's outputs: one mask per sequence (locked) or
        # per element, on the embeddings and between recurrent layers.
        self.dropout_style = dropout_style
        if num_classes < 2:
            raise ValueError("a classifier needs at least 2 classes")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be >= 0 and < 1, got {dropout}")
        self.num_classes = num_classes
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        stack = (cell, embed_dim, hidden_size, num_layers, dropout if num_layers > 1 else 0.0)
        self.rnn = RecurrentStack(*stack, dropout_style=dropout_style)
        # bidirectional: a second stack reads each row's real tokens last-to-first. Reversing per
        # row (not nn.LSTM(bidirectional=True), which reads the padding first) keeps padding unread.
        self.rnn_reverse = RecurrentStack(*stack, dropout_style=dropout_style) if bidirectional else None
        # bag_of_embeddings: the mean of the real tokens' embeddings joins the pooled states, a
        # fastText-style linear path from words to classes beside the recurrent one.
        self.bag_of_embeddings = bag_of_embeddings
        features = (3 * hidden_size if pooling == "concat" else hidden_size) * (2 if bidirectional else 1)
        features += embed_dim if bag_of_embeddings else 0
        self.head = nn.Linear(features, 1 if num_classes == 2 else num_classes)
        # wide: TF-IDF word unigrams + hashed bigrams into their own linear layer (wide.py), whose
        # logits are mixed with the recurrent path's: (1 - mix) * deep + mix * wide.
        self.wide = None
        if wide:
            self.wide = WideNgrams(vocab_size=vocab_size, buckets=wide_buckets,
                                   out_features=self.head.out_features)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # ids: (B, T) right-padded with 0; lengths: (B,) real tokens per row, >= 1
        logits = self.deep_logits(ids, lengths)  # (B, 1) or (B, C)
        if self.wide is None:
            return logits
        return self.wide.mixed(logits, ids, lengths)  # fp32

    def deep_logits(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The recurrent path's logits alone (what training fits; the wide path is fitted first)."""
        x = self.embedding(ids)  # (B, T, E)
        if self.dropout_style == "element":
            x = self.dropout(x)  # a mask per element: B*T*E Bernoulli samples
        elif self.training and self.dropout.p > 0:
            # An element-wise mask drew B*T*E Bernoulli samples and took ~11% of a CPU training
            # step; a mask per sequence draws B*E.
            x = locked_dropout(x, self.dropout.p, steps_dim=1)  # mask (B, 1, E)
        parts = [self.pool(self.rnn(x), lengths)]  # (B, H) or (B, 3H)
        if self.rnn_reverse is not None:
            parts.append(self.pool(self.rnn_reverse(reverse_rows(x, lengths)), lengths))
        if self.bag_of_embeddings:
            lengths = lengths.to(x.device)
            parts.append(masked_mean(x, real_steps(x.shape[1], lengths), lengths))  # (B, E)
        features = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return self.head(self.dropout(features))  # (B, 1) or (B, C)

    def pool(self, out: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, H) states -> (B, H) features (B, 3H for concat) from real steps only.

        (pack_padded_sequence would also skip padding but leaves the fast oneDNN path on CPU.)
        """
        lengths = lengths.to(out.device)
        parts = []
        if self.pooling in ("last", "concat"):
            last = (lengths - 1).clamp(min=0)
            parts.append(out[torch.arange(out.shape[0], device=out.device), last])  # (B, H)
        if self.pooling != "last":
            real = real_steps(out.shape[1], lengths)  # (B, T)
            if self.pooling in ("max", "concat"):
                parts.append(out.masked_fill(~real[..., None], float("-inf")).amax(dim=1))
            if self.pooling in ("mean", "concat"):
                parts.append(masked_mean(out, real, lengths))  # (B, H)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B, C) from logits, for both the sigmoid and the softmax head."""
        if self.num_classes == 2:
            p1 = torch.sigmoid(logits[:, 0].float())
            return torch.stack([1 - p1, p1], dim=1)
        return torch.softmax(logits.float(), dim=1)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None):
        """Binary cross-entropy for two classes, cross-entropy for more. ``targets``: (B,) int."""
        if self.num_classes == 2:
            pos_weight = None if weight is None else weight[1] / weight[0]
            return F.binary_cross_entropy_with_logits(
                logits[:, 0].float(), targets.float(), pos_weight=pos_weight
            )
        return F.cross_entropy(logits.float(), targets, weight=weight)
