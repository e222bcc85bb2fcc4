"""Training tokens/s of the peephole LSTM against nn.LSTM and the old autograd loop, in one run.

    python bench/peephole.py [--lengths 150 40] [--batch 64] [--batches 6] [--reps 3] [--no-old]
                             [--jit] [--threads N] [--autocast]

Each variant is ``LSTMClassifier`` (embed 128, hidden 128, 2 layers, dropout 0.2, its default
directions) training on the same random full-length batches: forward + backward + Adam step,
flushed denormals and the trainer's allocator setting, torch's default threads unless
``--threads``. Variants:

* ``lstm``     : ``cell="lstm"`` (nn.LSTM, oneDNN on CPU)
* ``old``      : ``cell="peephole"`` with the layers run by the original Python loop through
                 autograd (``sparklstm.nn.peephole.peephole_reference``), same weights as ``new``
* ``new``      : ``cell="peephole"`` as shipped (one input-projection matmul, hand-written BPTT,
                 each step's element-wise work in one C call: sparklstm/nn/peephole_step.c)
* ``torch``    : the same layer with its torch-kernel steps (``SPARKLSTM_PEEPHOLE_KERNEL=0``, the
                 fallback where no C compiler works), same weights as ``new``
* ``jit``      : (``--jit``) the old loop under ``torch.jit.script``, for comparison only

The variants are interleaved ``--reps`` times (other processes share the CPU, so timings
drift); the table shows each variant's median, and the ratios are medians of the ratios
within each repetition. The header prints the load average: with two threads on a busy 2-core
machine every small matmul can stall on the second OpenMP thread (nn.LSTM's too), so compare
with ``--threads 1`` and more ``--batches`` when the load is high.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from sparklstm.nn.model import LSTMClassifier, locked_dropout
from sparklstm.nn import peephole_kernel
from sparklstm.nn.peephole import peephole_reference
from sparklstm.runtime import tune_allocator

VOCAB = 5000


class ReferenceStack(nn.Module):
    """A peephole RecurrentStack's layers (shared weights) run by the original autograd loop."""

    def __init__(self, stack: nn.Module, layer_fn=peephole_reference):
        super().__init__()
        self.layers, self.dropout, self.layer_fn = stack.layers, stack.dropout, layer_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for n, layer in enumerate(self.layers):
            if n > 0 and self.training and self.dropout > 0:
                x = locked_dropout(x, self.dropout, steps_dim=1)  # as RecurrentStack
            x = self.layer_fn(x, layer.weight_ih, layer.weight_hh, layer.bias, layer.weight_peep)
        return x


def _jit_loop(x_proj: torch.Tensor, weight_hh: torch.Tensor, weight_peep: torch.Tensor):
    B, T = x_proj.shape[0], x_proj.shape[1]
    H = weight_hh.shape[1]
    w_ci, w_cf, w_co = weight_peep[0], weight_peep[1], weight_peep[2]
    h = x_proj.new_zeros(B, H)
    c = x_proj.new_zeros(B, H)
    w_t = weight_hh.t()
    outputs: list[torch.Tensor] = []
    for t in range(T):
        gates = torch.addmm(x_proj[:, t], h, w_t)
        i, f, g, o = gates.chunk(4, dim=1)
        i = torch.sigmoid(i + w_ci * c)
        f = torch.sigmoid(f + w_cf * c)
        o = torch.sigmoid(o + w_co * c)
        c = f * c + i * torch.tanh(g)
        h = o * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs, dim=1)


def jit_reference():
    """The old loop's recurrence under torch.jit.script (input projection outside)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(_jit_loop)

    def layer(x, weight_ih, weight_hh, bias, weight_peep):
        return scripted(F.linear(x, weight_ih, bias), weight_hh, weight_peep)

    return layer


def make_batches(n: int, batch: int, length: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randint(2, VOCAB, (batch, length), generator=gen),
             torch.full((batch,), length),
             torch.randint(0, 2, (batch,), generator=gen)) for _ in range(n)]


def train_tokens_per_s(model: nn.Module, opt, batches, autocast: bool = False,
                       fused: bool = True) -> float:
    model.train()
    os.environ[peephole_kernel.ENV] = "1" if fused else "0"
    tokens, started = 0, time.perf_counter()
    for ids, lengths, y in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):  # as train.py
            logits = model(ids, lengths)
        loss = model.loss(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tokens += int(lengths.sum())
    return tokens / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", type=int, nargs="+", default=[150, 40])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=6, help="timed batches per variant and rep")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--no-old", action="store_true", help="skip the (slow) old autograd loop")
    p.add_argument("--jit", action="store_true", help="also time the old loop under jit.script")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--autocast", action="store_true",
                   help="forward under bf16 autocast, as train.py's precision=bf16 does")
    a = p.parse_args()
    torch.set_flush_denormal(True)
    tune_allocator()  # as train.py: freed buffers stay in the heap (no page faults per batch)
    if a.threads > 0:
        torch.set_num_threads(a.threads)

    torch.manual_seed(0)
    models = {"lstm": LSTMClassifier(vocab_size=VOCAB, num_classes=2, cell="lstm")}
    torch.manual_seed(0)
    new = LSTMClassifier(vocab_size=VOCAB, num_classes=2, cell="peephole")
    variants = ["lstm", "new"]
    os.environ.pop(peephole_kernel.ENV, None)  # each variant sets it (see train_tokens_per_s)
    if peephole_kernel.step_kernel() is not None:
        models["torch"] = copy.deepcopy(new)
        variants.append("torch")
    if not a.no_old:
        models["old"] = copy.deepcopy(new)
        models["old"].rnn = ReferenceStack(models["old"].rnn)
        variants.append("old")
    if a.jit:
        models["jit"] = copy.deepcopy(new)
        models["jit"].rnn = ReferenceStack(models["jit"].rnn, jit_reference())
        variants.append("jit")
    models["new"] = new
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-3) for k, m in models.items()}

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {a.batch}, "
          f"embed 128, hidden 128, 2 layers, {'bf16 autocast' if a.autocast else 'fp32'}; "
          f"{a.batches} timed batches x {a.reps} reps; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; fused C step "
          f"{'built' if 'torch' in variants else 'NOT built (no working C compiler)'}")
    rows = []
    for length in a.lengths:
        batches = make_batches(a.batches, a.batch, length, seed=length)
        warm = make_batches(2, a.batch, length, seed=length + 1)
        for k in variants:  # warm-up: oneDNN primitives, jit profiling runs, allocator
            train_tokens_per_s(models[k], opts[k], warm, a.autocast, fused=k != "torch")
        runs = {k: [] for k in variants}
        for rep in range(a.reps):
            order = variants if rep % 2 == 0 else variants[::-1]
            for k in order:
                runs[k].append(train_tokens_per_s(models[k], opts[k], batches, a.autocast,
                                                  fused=k != "torch"))
        med = {k: statistics.median(v) for k, v in runs.items()}

        def ratio(num, den):
            return statistics.median(x / y for x, y in zip(runs[num], runs[den]))

        rows.append((length, med, {f"new/{k}": ratio("new", k) for k in variants if k != "new"}))

    cols = variants
    print(f"\n{'T':>5} " + " ".join(f"{k + ' tok/s':>12}" for k in cols) + "  ratios")
    for length, med, ratios in rows:
        r = "  ".join(f"{k} {v:5.2f}x" for k, v in ratios.items())
        print(f"{length:>5} " + " ".join(f"{med[k]:12.0f}" for k in cols) + f"  {r}")


if __name__ == "__main__":
    main()
