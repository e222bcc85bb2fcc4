"""The CUDA paths, checked and measured in one short run on a machine with a GPU.

    python bench/gpu.py --make-data .gpu      # here, with Spark: the corpora and a model
    python bench/gpu.py --data .gpu --out OUT # on the GPU machine (no Spark or Java needed;
                                              # sparklstm is imported from this checkout)

A lent GPU machine has torch with CUDA but no Spark, so the Spark steps (prep, and training the
scoring model) run first on a CPU machine, and their outputs travel with the run. The GPU run
then checks and times, each section on its own so one failure does not hide the rest:

1. devices   ``auto`` resolves to CUDA; a Spark task's GPU address maps to ``cuda:N``; the
             per-worker model cache of ``classify_udf`` keeps one model per device; int8 on
             CUDA is refused with a clear error.
2. scoring   the in-process pipeline of ``classify_udf`` (``Predictor``) on CUDA, fp32 and bf16,
             at several model batch sizes, whole and closed early as on CPU; encode (CPU) and
             forward (GPU) timed apart; the padded-to-max_len fp32 forward that a
             ``predict_batch_udf`` user writes; the same rows on the CPU for agreement
             (identical labels, max probability difference).
3. peephole  the from-scratch cell on CUDA against a float64 CPU reference (forward and
             gradients), since its C step is CPU-only and CUDA runs the torch path.
4. training  ``bench/train.py``'s plain padded fp32 loop against sparklstm's trainer, both on
             CUDA, then the gru and peephole cells; real tokens/s and validation macro-F1.

Figures go to stdout and ``OUT/gpu.json`` (written after every section).
"""

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # bench/ siblings (score, train), and sparklstm itself

RESULTS: dict = {}
# "cuda" on the GPU machine; "cpu" only for a dry run of this script on a machine without one.
DEVICE = "cuda"


def sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def run_section(name: str, fn, out: Path | None) -> None:
    """Run a section, record its figures or its error, and write everything so far."""
    started = time.perf_counter()
    print(f"\n== {name}", flush=True)
    try:
        RESULTS[name] = fn()
    except Exception as e:  # one broken section must not hide the others' figures
        traceback.print_exc()
        RESULTS[name] = {"error": f"{type(e).__name__}: {e}"}
    RESULTS[name + "_seconds"] = round(time.perf_counter() - started, 1)
    if out is not None:
        (out / "gpu.json").write_text(json.dumps(RESULTS, indent=2, default=str))


def make_data(dest: Path) -> None:
    """Spark side, on a CPU machine: the scoring model of bench/score.py and the spam corpus prepped."""
    from corpora import spam
    from score import build_model

    from sparklstm.config import PrepConfig
    from sparklstm import prep
    from sparklstm.spark.session import get_spark

    dest.mkdir(parents=True, exist_ok=True)
    spark = get_spark(master="local[2]", conf={"spark.sql.shuffle.partitions": "4"})
    work = Path(tempfile.mkdtemp(prefix="sparklstm-gpu-"))
    model = build_model(spark, work)
    import shutil

    shutil.copytree(model, dest / "score_model", dirs_exist_ok=True)
    raw = work / "spam.parquet"
    spam().to_parquet(raw)
    prep(spark, input_path=str(raw), out=dest / "spam_prepped", config=PrepConfig())
    spark.stop()
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {dest}/score_model and {dest}/spam_prepped")


def check_devices(data: Path) -> dict:
    import torch

    from sparklstm.spark import scoring
    from sparklstm.artifact import read_model_files
    from sparklstm.device import resolve_device, task_gpu_device
    from sparklstm.errors import SparklstmError
    from sparklstm.predictor import Predictor

    cuda = DEVICE == "cuda"
    got = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if cuda else None,
           "cudnn": torch.backends.cudnn.version(), "gpus": torch.cuda.device_count(),
           "auto": resolve_device("auto"), "task_gpu_0": task_gpu_device(["0"], visible=""),
           "task_gpu_visible": task_gpu_device(["3"], visible="3")}
    assert got["auto"] == DEVICE and got["task_gpu_0"] == "cuda:0" == got["task_gpu_visible"]
    gpu = "cuda:0" if cuda else "cpu"

    class Broadcast:  # what the UDF's worker side reads: .value holds the model files' bytes
        value = read_model_files(data / "score_model")

    before = scoring.LOAD_COUNT["n"]
    for device in (gpu, "cpu", gpu, "cpu"):  # a reused worker, tasks on both devices
        p = scoring._predictor(Broadcast, "m", device, 256, "fp32")
        got[f"param_device_{device}"] = str(next(p.model.parameters()).device)
    got["loads_for_4_tasks_2_devices"] = scoring.LOAD_COUNT["n"] - before
    assert got["loads_for_4_tasks_2_devices"] == (2 if cuda else 1)
    try:
        Predictor.from_dir(data / "score_model", device=DEVICE, precision="int8")
        got["int8_on_cuda"] = "accepted (unexpected)"
    except SparklstmError as e:
        got["int8_on_cuda"] = f"refused: {e}"
    for k, v in got.items():
        print(f"  {k}: {v}")
    return got


def scoring_figures(data: Path, rows: int, cpu_rows: int) -> dict:
    import torch
    from score import make_texts, padded_forward

    from sparklstm.artifact import load_artifact
    from sparklstm.predictor import Predictor

    artifact = load_artifact(data / "score_model")
    texts, _ = make_texts(rows, seed=2)
    p = Predictor(artifact, device=DEVICE, precision="fp32")
    t = time.perf_counter()
    encoded = p.encode(texts)
    encode_s = time.perf_counter() - t
    ids = [e for e in encoded if e is not None]
    tokens = sum(len(e) for e in ids)
    got = {"rows": rows, "tokens": tokens, "mean_tokens": tokens / rows,
           "encode_docs_per_s_one_core": rows / encode_s}
    print(f"  {rows} rows, mean {tokens / rows:.0f} tokens; encode on one CPU core: "
          f"{rows / encode_s:,.0f} docs/s")

    def timed(fn, reps=2):
        fn()  # warm-up (cuDNN plans, autocast caches)
        sync()
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            sync()
            best = min(best, time.perf_counter() - t)
        return best

    probs = {}
    for precision in ("fp32", "bf16"):
        for bs in (256, 1024, 4096):
            q = Predictor(artifact, device=DEVICE, batch_size=bs, precision=precision)
            secs = timed(lambda: probs.__setitem__((precision, bs), q.predict_ids(ids)))
            got[f"forward_{precision}_b{bs}_docs_per_s"] = rows / secs
            print(f"  forward on CUDA, {precision}, batch {bs:5d}: {rows / secs:10,.0f} docs/s "
                  f"{tokens / secs:12,.0f} tokens/s")
    for bs in (256, 1024):  # Predictor keeps whole batches on GPUs; the CPU's rule, timed here
        q = Predictor(artifact, device=DEVICE, batch_size=bs, precision="fp32")
        q.early_close = True
        secs = timed(lambda: q.predict_ids(ids))
        got[f"forward_fp32_b{bs}_early_close_docs_per_s"] = rows / secs
        print(f"  forward on CUDA, fp32, batch {bs:5d}, batches closed early as on CPU: "
              f"{rows / secs:10,.0f} docs/s")
    q = Predictor(artifact, device=DEVICE, batch_size=256, precision="fp32")
    secs = timed(lambda: padded_forward(q, ids, batch_size=256))
    got["forward_padded_max_len_fp32_b256_docs_per_s"] = rows / secs
    print(f"  forward on CUDA, padded to max_len, fp32, batch 256 (predict_batch_udf's user code): "
          f"{rows / secs:,.0f} docs/s")
    secs = timed(lambda: q.predict_arrays(texts), reps=1)
    got["end_to_end_fp32_b256_one_process_docs_per_s"] = rows / secs
    print(f"  end to end (encode + forward) in one process, fp32, batch 256: {rows / secs:,.0f} docs/s")

    c = Predictor(artifact, device="cpu", batch_size=256, precision="fp32")
    sub = ids[:cpu_rows]
    t = time.perf_counter()
    cpu = c.predict_ids(sub)
    secs = time.perf_counter() - t
    got["cpu_fp32_b256_docs_per_s"] = len(sub) / secs
    got["cpu_threads"] = torch.get_num_threads()
    print(f"  forward on this machine's CPU ({torch.get_num_threads()} threads), fp32: "
          f"{len(sub) / secs:,.0f} docs/s")
    for precision, bs in (("fp32", 256), ("bf16", 256), ("fp32", 4096)):
        gpu = probs[(precision, bs)][: len(sub)]
        same = float(np.mean(gpu.argmax(1) == cpu.argmax(1)))
        diff = float(np.abs(gpu - cpu).max())
        got[f"agreement_{precision}_b{bs}_vs_cpu_fp32"] = {"identical_labels": same, "max_prob_diff": diff}
        print(f"  CUDA {precision} batch {bs} vs CPU fp32 on {len(sub)} rows: identical labels "
              f"{same:.4f}, max |prob diff| {diff:.2e}")
    return got


def peephole_check() -> dict:
    import torch

    from sparklstm.nn.model import PeepholeLSTM

    torch.manual_seed(0)
    ref = PeepholeLSTM(24, 32).double()
    x = torch.randn(5, 40, 24, dtype=torch.float64)  # (B, T, D)
    ref.weight_peep.data.mul_(3)  # make the peephole terms matter
    got = {}
    for name, dtype, autocast in (("fp32", torch.float32, False), ("bf16 autocast", torch.float32, True)):
        layer = PeepholeLSTM(24, 32).to(DEVICE)
        layer.load_state_dict({k: v.to(torch.float32) for k, v in ref.state_dict().items()})
        xr = x.clone().requires_grad_(True)
        xc = x.to(DEVICE, dtype).requires_grad_(True)
        ref.zero_grad()
        yr = ref(xr)
        yr.square().sum().backward()
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=autocast):
            yc = layer(xc)
        yc.float().square().sum().backward()

        def rel(a, b):
            return float((a.detach().double().cpu() - b.detach()).norm() / b.detach().norm())

        errs = {"h": rel(yc, yr), "grad_x": rel(xc.grad, xr.grad)}
        for (k, pc), (_, pr) in zip(layer.named_parameters(), ref.named_parameters()):
            errs["grad_" + k] = rel(pc.grad, pr.grad)
        got[name] = errs
        print(f"  {name}: max relative error {max(errs.values()):.1e} ({errs})")
    assert max(got["fp32"].values()) < 1e-3 and max(got["bf16 autocast"].values()) < 5e-2
    return got


def training_figures(data: Path, epochs: int, peephole_epochs: int) -> dict:
    from train import baseline

    from sparklstm.config import ModelConfig, TrainConfig
    from sparklstm import train

    prepped = str(data / "spam_prepped")
    got = {}
    base = baseline(prepped, epochs, 64, 0, device=DEVICE)
    got["baseline_padded_fp32"] = base
    print(f"  baseline, padded to max_len, fp32, batch 64: {base['tokens_per_s']:,.0f} tokens/s, "
          f"val macro-F1 {base['val_macro_f1']:.4f}")
    runs = [("lstm", epochs, 64, "auto"), ("lstm", epochs, 64, "fp32"), ("lstm", epochs, 256, "auto"),
            ("gru", epochs, 64, "auto"), ("peephole", peephole_epochs, 64, "auto")]
    for cell, n, bs, precision in runs:
        with tempfile.TemporaryDirectory() as out:
            m = train(prepped=prepped, out=Path(out) / "m", progress=False, log=lambda s: None,
                      model_config=ModelConfig(cell=cell),
                      train_config=TrainConfig(epochs=n, patience=n, batch_size=bs, device=DEVICE,
                                               precision=precision))
        key = f"sparklstm_{cell}_b{bs}_{m['precision']}_{n}ep"
        got[key] = {"tokens_per_s": m["train_tokens_per_s"], "seconds": m["train_seconds"],
                    "val_macro_f1": m["history"][-1]["val_macro_f1"],
                    "test_macro_f1": m["test"]["macro_f1"], "device": m["device"]}
        print(f"  sparklstm {cell}, batch {bs}, {m['precision']}, {n} epochs: "
              f"{m['train_tokens_per_s']:,.0f} tokens/s ({m['train_tokens_per_s'] / base['tokens_per_s']:.2f}x "
              f"baseline), val macro-F1 {got[key]['val_macro_f1']:.4f}, test {got[key]['test_macro_f1']:.4f}")
    return got


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--make-data", type=Path, help="(CPU machine, Spark) write the inputs here")
    ap.add_argument("--data", type=Path, default=Path(".gpu"))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--cpu-rows", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--peephole-epochs", type=int, default=1)
    ap.add_argument("--only", default="devices,scoring,peephole,training")
    ap.add_argument("--dry-run-on-cpu", action="store_true", help="check this script without a GPU")
    a = ap.parse_args()
    global DEVICE
    DEVICE = "cpu" if a.dry_run_on_cpu else "cuda"
    if a.make_data:
        make_data(a.make_data)
        return
    import torch

    if DEVICE == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/gpu.py: torch sees no CUDA device")
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
    jobs = {"devices": lambda: check_devices(a.data),
            "scoring": lambda: scoring_figures(a.data, a.rows, a.cpu_rows),
            "peephole": peephole_check,
            "training": lambda: training_figures(a.data, a.epochs, a.peephole_epochs)}
    for name in a.only.split(","):
        run_section(name, jobs[name], a.out)
    failed = [k for k, v in RESULTS.items() if isinstance(v, dict) and "error" in v]
    print("\nsections failed: " + (", ".join(failed) if failed else "none"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
