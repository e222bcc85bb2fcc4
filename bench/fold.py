"""The embedding fold, measured: the first layer's input projection as a (vocab, 4H) table.

    python bench/fold.py [--threads 1] [--vocab 30000]

For scoring, the first layer's input projection of every vocabulary entry, emb @ W_ihᵀ + b, can
be computed once when the model loads and looked up per token instead of multiplied: a quarter
of the default model's matmul FLOPs. The recurrence must then run over precomputed gate inputs,
which nn.LSTM (oneDNN's whole-layer kernel) does not take, so it runs as a loop of torch ops
(one addmm and the gate element-wise work per step). One direction's first layer, 256 rows of
150 tokens, inference mode, best of 7:

  nn.LSTM        embedding lookup + nn.LSTM layer (what the model runs today)
  fold           table row gather (index_select) + the step loop
  parts          lookup + input GEMM, against the table gather, to show where the time goes

Prints milliseconds and the fold's speed-up per precision, and the table's memory per direction.
"""

import argparse
import contextlib
import time

import torch


def best(fn, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vocab", type=int, default=30000)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=150)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    B, T, E, H = a.rows, a.tokens, 128, 128
    emb, lstm = torch.nn.Embedding(a.vocab, E), torch.nn.LSTM(E, H)
    ids = torch.randint(2, a.vocab, (T, B))  # (T, B) time-major, as the model runs its layers
    print(f"{a.threads} thread(s), vocab {a.vocab}, {B} rows x {T} tokens, first layer, one direction")
    with torch.inference_mode():
        for precision in ("fp32", "bf16"):
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            # (V, 4H): every token's input projection with both biases, in the scoring dtype.
            table = (emb.weight @ lstm.weight_ih_l0.t() + lstm.bias_ih_l0 + lstm.bias_hh_l0).to(dtype)
            w_hh_t = lstm.weight_hh_l0.t().to(dtype).contiguous()  # (H, 4H)
            autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                        else contextlib.nullcontext())

            def today():
                with autocast:
                    return lstm(emb(ids))[0]  # (T, B, H)

            def fold():
                gates_in = table.index_select(0, ids.view(-1)).view(T, B, 4 * H)
                h = torch.zeros(B, H, dtype=dtype)
                c = torch.zeros(B, H)  # the cell state stays fp32
                out = torch.empty(T, B, H, dtype=dtype)
                for t in range(T):
                    g = torch.addmm(gates_in[t], h, w_hh_t).float()  # (B, 4H)
                    i, f, z, o = g.chunk(4, 1)
                    c = torch.addcmul(f.sigmoid() * c, i.sigmoid(), z.tanh())
                    h = (o.sigmoid() * c.tanh()).to(dtype)
                    out[t] = h
                return out

            err = (today().float() - fold().float()).abs().max().item()
            t_today, t_fold = best(today), best(fold)
            w_in = lstm.weight_ih_l0.to(dtype).t()
            t_gemm = best(lambda: emb(ids).to(dtype).view(-1, E) @ w_in)
            t_gather = best(lambda: table.index_select(0, ids.view(-1)))
            print(f"{precision}: nn.LSTM {t_today:6.1f} ms, fold {t_fold:6.1f} ms -> fold speed-up "
                  f"{t_today / t_fold:.2f}x (max |diff| {err:.1e}); lookup + input GEMM {t_gemm:.1f} ms, "
                  f"table gather {t_gather:.1f} ms; table {table.numel() * table.element_size() / 2**20:.0f} "
                  f"MiB per direction")


if __name__ == "__main__":
    main()
