"""Training tokens/s of the default model with and without flushed denormals, in one run.

    python bench/denormal.py [--prepped sparklstm-demo/prepped] [--batches 30] [--cell lstm]

Both runs start from the same weights and see the same batches; the ratio is what
``train.flush_denormal = true`` buys on this CPU.
"""

import argparse
import copy
import time

import numpy as np
import torch

from sparklstm.training.data import batch_indices, pad_batch, read_split
from sparklstm.nn.model import LSTMClassifier
from sparklstm.spark.prep import load_prepped


def run(model, split, batches, *, flush: bool) -> float:
    torch.set_flush_denormal(flush)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    tokens, started = 0, time.perf_counter()
    for rows in batches:
        x, lengths, y = pad_batch(split, rows)
        loss = model.loss(model(x, lengths), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += int(lengths.sum())
    return tokens / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--prepped", default="sparklstm-demo/prepped")
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--cell", default="lstm")
    a = p.parse_args()
    vocab, labels, _ = load_prepped(a.prepped)
    split = read_split(f"{a.prepped}/train")
    torch.manual_seed(0)
    base = LSTMClassifier(vocab_size=len(vocab), num_classes=len(labels), cell=a.cell)
    batches = batch_indices(split.lengths, batch_size=64, rng=np.random.default_rng(0))[: a.batches]
    run(copy.deepcopy(base), split, batches[:3], flush=True)  # warm-up (oneDNN primitives)
    flushed = run(copy.deepcopy(base), split, batches, flush=True)
    plain = run(copy.deepcopy(base), split, batches, flush=False)
    print(f"cell={a.cell} threads={torch.get_num_threads()} batches={len(batches)}")
    print(f"denormals flushed : {flushed:10.0f} tokens/s")
    print(f"denormals kept    : {plain:10.0f} tokens/s")
    print(f"ratio             : {flushed / plain:10.2f}x")


if __name__ == "__main__":
    main()
