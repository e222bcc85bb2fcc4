"""Training throughput: sparklstm's trainer against a plain padded fp32 nn.LSTM loop, one run.

    python bench/train.py [--prepped sparklstm-demo/prepped] [--epochs 6]

Both train the default model (Embedding 128 -> 2 x LSTM 128, both directions -> Dense) from the
same seed on the same train split with denormals flushed, for the same number of epochs, and are
scored on the same val split:

  baseline : shuffled batches padded to max_len, fp32, element-wise dropout (the loop most
             tutorials show)
  sparklstm: ``sparklstm.training.loop`` defaults (length-bucketed batches padded to their own longest
             row, bf16 autocast where supported, fp32 master weights), early stopping off

Prints real (non-pad) tokens/s and validation macro-F1 of each, and the speed ratio.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sparklstm.config import ModelConfig, TrainConfig, as_dict
from sparklstm.training.data import read_split
from sparklstm.device import resolve_device
from sparklstm.metrics import confusion_matrix, report
from sparklstm.nn.model import LSTMClassifier
from sparklstm.spark.prep import load_prepped
from sparklstm.training.loop import predict_split, seed_everything, train


def baseline(prepped: str, epochs: int, batch_size: int, seed: int, device: str = "cpu") -> dict:
    vocab, labels, info = load_prepped(prepped)
    max_len = info["settings"]["max_len"]
    tr, val = read_split(f"{prepped}/train"), read_split(f"{prepped}/val")
    torch.set_flush_denormal(True)
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    # The default network, with the textbook element-wise dropout on the embeddings (sparklstm
    # locks the mask per sequence, which trains the same and draws T times fewer random numbers).
    model = LSTMClassifier(vocab_size=len(vocab), num_classes=len(labels), **as_dict(ModelConfig()),
                           dropout_style="element").to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x_all = np.zeros((len(tr), max_len), dtype=np.int64)  # every row padded to max_len
    for i, ids in enumerate(tr.ids):
        x_all[i, : len(ids)] = ids
    tokens, seconds = 0, 0.0
    for _ in range(epochs):
        model.train()
        order = rng.permutation(len(tr))
        started = time.perf_counter()
        for s in range(0, len(tr), batch_size):
            rows = order[s : s + batch_size]
            x = torch.from_numpy(x_all[rows]).to(device)  # (b, max_len)
            lengths = torch.from_numpy(tr.lengths[rows])
            y = torch.from_numpy(tr.labels[rows]).to(device)
            loss = model.loss(model(x, lengths.to(device)), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            tokens += int(lengths.sum())
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds += time.perf_counter() - started
    preds = predict_split(model, val, device=device)
    f1 = report(confusion_matrix(val.labels, preds, len(labels)), labels)["macro_f1"]
    return {"tokens_per_s": tokens / seconds, "val_macro_f1": f1, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prepped", default="sparklstm-demo/prepped")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (both loops use it)")
    a = ap.parse_args()
    device = resolve_device(a.device)
    base = baseline(a.prepped, a.epochs, a.batch_size, a.seed, device=device)
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, seed=a.seed, patience=a.epochs,
                          device=device)
        m = train(prepped=a.prepped, out=Path(out) / "m", train_config=cfg, progress=False,
                  log=lambda s: None)
    ours = {"tokens_per_s": m["train_tokens_per_s"], "val_macro_f1": m["history"][-1]["val_macro_f1"],
            "best_val_macro_f1": m["val"]["macro_f1"], "seconds": m["train_seconds"],
            "precision": m["precision"]}
    print(f"{a.epochs} epochs, batch {a.batch_size}, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'':32s} {'tokens/s':>10s} {'val macro-F1':>13s} {'seconds':>8s}")
    print(f"{'baseline (pad to max_len, fp32)':32s} {base['tokens_per_s']:10.0f} "
          f"{base['val_macro_f1']:13.4f} {base['seconds']:8.1f}")
    print(f"{'sparklstm trainer (' + ours['precision'] + ')':32s} {ours['tokens_per_s']:10.0f} "
          f"{ours['val_macro_f1']:13.4f} {ours['seconds']:8.1f}   (best epoch: {ours['best_val_macro_f1']:.4f})")
    print(f"speed ratio: {ours['tokens_per_s'] / base['tokens_per_s']:.2f}x")
    print(json.dumps({"baseline": base, "sparklstm": ours}))


if __name__ == "__main__":
    main()
