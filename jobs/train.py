"""spark-submit entry for data-parallel training: argument parsing + one call.

    spark-submit --master spark://host:7077 jobs/train.py --prepped /shared/prepped \
        --out /shared/model --processes 4 [--use-gpu]

The ranks run as Spark tasks through TorchDistributor (one task slot each, a barrier stage);
prepped/ and the model directory must be on storage every executor reads and writes.
Settings come from --config (conf/default.toml's layout) and the flags below.
"""

import argparse
import sys

try:
    from sparklstm import train
    from sparklstm.config import load_config
    from sparklstm.spark.session import job_spark, run_job
except ImportError as e:  # spark-submit ran a Python without sparklstm: PYSPARK_PYTHON unset?
    sys.exit(f"error: {sys.executable} cannot import {e.name}: run spark-submit with "
             "PYSPARK_PYTHON set to the Python that has sparklstm installed")


def run(argv) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prepped", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--processes", type=int, required=True, help="ranks: one Spark task slot each")
    p.add_argument("--threads", type=int, help="torch threads per rank (default 1)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="the global batch, split among the ranks")
    p.add_argument("--use-gpu", action="store_true", help="a GPU per rank (task resources)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--config")
    a = p.parse_args(argv)
    cfg = load_config(path=a.config, overrides={"train": {
        "processes": a.processes, "num_threads": a.threads, "epochs": a.epochs,
        "batch_size": a.batch_size}})
    job_spark(app_name="sparklstm-train")  # TorchDistributor runs on the active session
    metrics = train(prepped=a.prepped, out=a.out, model_config=cfg.model, train_config=cfg.train,
                    progress=False, resume=a.resume, cluster=True, use_gpu=a.use_gpu,
                    log=lambda m: print(m, file=sys.stderr, flush=True))
    test = metrics["test"] or metrics["val"] or {"macro_f1": float("nan")}
    return (f"model written to {a.out} by {a.processes} ranks: test macro-F1 "
            f"{test['macro_f1']:.4f}, {metrics['train_tokens_per_s']:.0f} tokens/s")


def main(argv=None) -> int:
    return run_job(run, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
