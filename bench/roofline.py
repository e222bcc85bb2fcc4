"""How close the default model runs to this machine's matmul peak, scoring and training, fp32 and bf16.

    python bench/roofline.py [--threads 1] [--tokens 150]

Measured in one run, with ``--threads`` torch threads (one, as a Spark task or a training rank):

  peak      a GEMM of the model's own shape, (256 x 128) @ (128 x 512): a batch through one
            layer's gate projection, best of 7
  scoring   the default model's forward (inference mode) on 256 rows of ``--tokens`` real tokens
  training  a training step (forward, backward, Adam) on 64 rows of ``--tokens`` tokens

FLOP per token counts the LSTM matmuls only (input and recurrent projections of every layer and
direction: 2 x gates x H x (input + H) each); the embedding lookup, the gate nonlinearities, the
pooling, the head and the wide path are not matmuls and are left out, so the share of the peak is
the share of time the model spends at GEMM speed. A training step counts 3x the forward (the
backward pass computes gradients for inputs and weights).
"""

import argparse
import time

import torch

from sparklstm.config import ModelConfig, as_dict
from sparklstm.nn.model import LSTMClassifier

GATES = {"lstm": 4, "peephole": 4, "gru": 3}


def forward_flops_per_token(cfg: ModelConfig) -> int:
    """Matmul FLOP of one real token through the recurrent layers (see the module docstring)."""
    per_direction = 0
    for layer in range(cfg.num_layers):
        inputs = cfg.embed_dim if layer == 0 else cfg.hidden_size
        per_direction += 2 * GATES[cfg.cell] * cfg.hidden_size * (inputs + cfg.hidden_size)
    return per_direction * (2 if cfg.bidirectional else 1)


def best_of(fn, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def gemm_peak(dtype) -> float:
    """GFLOP/s of (256 x 128) @ (128 x 512) in ``dtype``."""
    a, b = torch.randn(256, 128, dtype=dtype), torch.randn(128, 512, dtype=dtype)
    reps = 50
    with torch.inference_mode():
        seconds = best_of(lambda: [a @ b for _ in range(reps)])
    return 2 * 256 * 128 * 512 * reps / seconds / 1e9


def scoring_tokens_per_s(model, ids, lengths, precision: str) -> float:
    model.eval()

    def run():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                    enabled=precision == "bf16"):
            model(ids, lengths)

    run()
    return ids.numel() / best_of(run, repeats=5)


def training_tokens_per_s(model, ids, lengths, precision: str) -> float:
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    y = torch.randint(0, 2, (ids.shape[0],))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model.deep_logits(ids, lengths)
        loss = model.loss(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    return ids.numel() / best_of(step, repeats=5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=150, help="real tokens per row (no padding)")
    ap.add_argument("--vocab", type=int, default=30000)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    cfg = ModelConfig()
    model = LSTMClassifier(vocab_size=a.vocab, num_classes=2, **(as_dict(cfg) | {"wide": False}))
    flops = forward_flops_per_token(cfg)
    peaks = {"fp32": gemm_peak(torch.float32), "bf16": gemm_peak(torch.bfloat16)}
    print(f"{a.threads} thread(s); default model, {a.tokens} real tokens per row; "
          f"forward matmul FLOP per token {flops / 1e6:.3f} M, training step {3 * flops / 1e6:.3f} M")
    print(f"GEMM peak (256x128 @ 128x512): fp32 {peaks['fp32']:.1f}, bf16 {peaks['bf16']:.1f} GFLOP/s")
    print(f"\n{'stage':9s} {'precision':9s} {'tokens/s':>10s} {'GFLOP/s':>8s} {'peak':>7s} {'share':>6s}")
    for stage, rows, per_token, measure in (("scoring", 256, flops, scoring_tokens_per_s),
                                            ("training", 64, 3 * flops, training_tokens_per_s)):
        ids = torch.randint(2, a.vocab, (rows, a.tokens))
        lengths = torch.full((rows,), a.tokens)
        for precision in ("fp32", "bf16"):
            tps = measure(model, ids, lengths, precision)
            rate = tps * per_token / 1e9
            print(f"{stage:9s} {precision:9s} {tps:10.0f} {rate:8.1f} {peaks[precision]:7.1f} "
                  f"{rate / peaks[precision]:6.2f}")


if __name__ == "__main__":
    main()
