"""PyTorch training over prepped/ Parquet, in one process or as data-parallel ranks.

The loop is written out (no framework): length-bucketed batches, Adam, gradient clipping, a
validation pass per epoch, early stopping on validation macro-F1 with the best weights kept, and
the model directory written at the end with validation and test metrics. After every epoch the
loop's whole state is checkpointed (``checkpoint.py``) so ``resume=True`` continues an
interrupted run to the same result; a run that finishes removes its checkpoint.

With several ranks (``distributed.py`` starts them) each rank trains on its share of every global
batch (or, for a split streamed from its shards, on its share of the shards), DDP averages the
gradients, the validation logits are gathered from all ranks, and rank 0 alone writes. One rank
is ``Ranks()``, and the same code runs without touching torch.distributed.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..artifact import save_model
from .checkpoint import LoopState, remove_checkpoint, run_settings, save_checkpoint
from .checkpoint import resume as resume_state
from ..config import ModelConfig, TrainConfig, as_dict
from .data import Split, pad_batch
from .ranks import SINGLE, Ranks, data_parallel
from .shards import ShardedSplit, open_split
from ..device import resolve_device
from ..errors import SparklstmError
from ..metrics import confusion_matrix, report
from ..spark.prep import load_prepped
from ..runtime import tune_allocator
from ..nn.wide import choose_mix, fit_wide, predicted


CURVES_PNG = "training_curves.png"  # written into the model directory


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def training_precision(requested: str, device: str) -> str:
    """``auto`` -> bf16 autocast where it is faster than fp32 (device.auto_precision: a GPU with
    bf16, or a CPU where a timed GEMM says so), else fp32. A training step of the default LSTM ran
    ~1.6x faster in bf16 on an AMD EPYC, and 0.72-0.88x as fast on an Intel Xeon without AMX."""
    from ..device import auto_precision

    return auto_precision(requested, device)


def lr_at(tcfg: TrainConfig, progress: float) -> float:
    """The learning rate at ``progress`` (0 = first step, 1 = end of the last epoch)."""
    if tcfg.lr_schedule == "cosine":
        return tcfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return tcfg.lr


def planned_epochs(tcfg: TrainConfig, *, train_tokens: int) -> int:
    """``epochs``, cut so that the epochs read at most ``token_budget`` real tokens (at least one
    epoch): training time follows the budget, not the corpus size, once a corpus is large."""
    if tcfg.epochs < 1:
        raise SparklstmError(f"train.epochs must be >= 1, got {tcfg.epochs}")
    if tcfg.token_budget < 0:
        raise SparklstmError(f"train.token_budget must be >= 0 (0 = none), got {tcfg.token_budget}")
    if tcfg.token_budget == 0 or train_tokens == 0:
        return tcfg.epochs
    return max(1, min(tcfg.epochs, tcfg.token_budget // train_tokens))


def predict_split(model, split: Split, *, device: str, batch_size: int = 256) -> np.ndarray:
    """Predicted class index (N,) for every row of an in-memory split."""
    preds = np.empty(len(split), dtype=np.int64)
    for part, rows, pred in _predictions(model, split, device=device, batch_size=batch_size):
        preds[rows] = pred
    return preds


def _predictions(model, split: Split | ShardedSplit, *, device: str, batch_size: int):
    """(part, rows, predicted class (B,)) per batch, in length order (no shuffling)."""
    import torch

    model.eval()
    with torch.inference_mode():
        for part, rows in split.batches(batch_size=batch_size, rng=None):
            x, lengths, _ = pad_batch(part, rows)
            probs = model.probabilities(model(x.to(device), lengths.to(device)))
            yield part, rows, probs.argmax(dim=1).cpu().numpy()


def split_logits(fn, split: Split | ShardedSplit, *, device: str, ranks: Ranks = SINGLE):
    """(logits (N, out) fp32 on CPU, labels (N,)) of ``fn(ids, lengths)`` over a split, in its
    evaluation order (sorted by length). With several ranks each computes every world-th batch
    and all ranks receive all of them."""
    import torch

    done = []  # (batch index, logits (b, out), labels (b,))
    with torch.inference_mode():
        for index, (part, rows) in enumerate(split.batches(batch_size=256, rng=None)):
            if ranks.mine(index):
                x, lengths, y = pad_batch(part, rows)
                done.append((index, fn(x.to(device), lengths.to(device)).float().cpu(), y))
    done = sorted(ranks.gather(done), key=lambda item: item[0])
    if not done:
        return torch.zeros(0, 1), torch.zeros(0, dtype=torch.int64)
    return torch.cat([d[1] for d in done]), torch.cat([d[2] for d in done])


def select_metrics(model, split, labels: list[str], wide_logits, *, device: str,
                   ranks: Ranks = SINGLE):
    """(validation report, mix): the model's metrics on the selection split. With a wide path,
    the mix of the two paths' logits that scores best there (``wide.choose_mix``), and the
    recurrent path's own macro-F1 as ``deep_macro_f1``; without, mix is None."""
    if wide_logits is None:
        return evaluate_split(model, split, labels, device=device, ranks=ranks), None
    model.eval()
    deep, y = split_logits(model.deep_logits, split, device=device, ranks=ranks)
    mix, _ = choose_mix(deep, wide_logits, y, num_classes=len(labels))
    combined = (1 - mix) * deep + mix * wide_logits
    val = report(confusion_matrix(y.numpy(), predicted(combined).numpy(), len(labels)), labels)
    val["deep_macro_f1"] = report(
        confusion_matrix(y.numpy(), predicted(deep).numpy(), len(labels)), labels)["macro_f1"]
    return val, mix


def evaluate_split(model, split: Split | ShardedSplit, labels: list[str], *, device: str,
                   ranks: Ranks = SINGLE) -> dict:
    model.eval()
    logits, y = split_logits(model, split, device=device, ranks=ranks)
    pred = model.probabilities(logits).argmax(dim=1) if len(y) else y
    return report(confusion_matrix(y.numpy(), pred.numpy(), len(labels)), labels)


def train_batches(split: Split | ShardedSplit, *, batch_size: int, rng: np.random.Generator,
                  ranks: Ranks):
    """(part, rows) of this rank's training steps in one epoch. Every rank draws the same global
    batches from the same ``rng`` and takes its share of each; a streamed split instead deals its
    shards out to the ranks, each cutting batches of batch_size / world rows, for the same number
    of steps on every rank (DDP needs every rank in every all-reduce)."""
    if isinstance(split, ShardedSplit) and ranks.world > 1:
        yield from split.batches(batch_size=max(1, batch_size // ranks.world), rng=rng,
                                 rank=ranks.rank, world=ranks.world)
        return
    for part, rows in split.batches(batch_size=batch_size, rng=rng):
        if len(rows) >= ranks.world:  # a last batch smaller than the world is skipped by all
            yield part, ranks.share(rows)


def train(*, prepped: str | Path, out: str | Path, model_config: ModelConfig | None = None,
          train_config: TrainConfig | None = None, progress: bool = True,
          log: Callable[[str], None] = print, resume: bool = False, mlflow: bool = False,
          mlflow_experiment: str | None = None, cluster: bool = False,
          use_gpu: bool = False) -> dict:
    """Train on ``prepped/`` and write the model directory ``out``; returns metrics.json's content.

    ``train_config.processes`` ranks train data-parallel (DDP) on this machine, each with
    ``num_threads`` torch threads (1 if 0); 0 picks the layout (``distributed.default_processes``).
    With ``cluster=True`` the ranks are tasks of the active Spark session's cluster, started by
    TorchDistributor (``use_gpu``: a GPU per task); prepped/ and ``out`` must then be on storage
    every executor reads and writes.

    Every epoch is checkpointed in ``out/checkpoint/``; with ``resume=True`` training continues
    from the last completed epoch of an interrupted run with the same settings and ends with the
    same metrics as an uninterrupted run (``SparklstmError`` if there is no checkpoint or the
    settings differ). The checkpoint is removed once the model directory is written.

    With ``mlflow=True`` the run is logged to MLflow (settings, per-epoch and final metrics, the
    curves, the model directory and a pyfunc model; sparklstm/tracking.py): into the active run
    if there is one, else into a new run in ``mlflow_experiment`` (MLflow's active experiment if
    None). Several ranks log their epochs when training ends.

    Example
    -------
    >>> metrics = train(prepped="prepped/", out="model/")      # doctest: +SKIP
    >>> metrics["test"]["macro_f1"]                             # doctest: +SKIP
    0.96
    """
    mcfg = model_config or ModelConfig()
    tcfg = train_config or TrainConfig()
    if not 0 <= mcfg.dropout < 1:  # checked before any data is read
        raise SparklstmError(f"model.dropout must be >= 0 and < 1, got {mcfg.dropout}")
    if mlflow_experiment is not None and not mlflow:
        raise SparklstmError("mlflow_experiment applies only with mlflow=True")
    run = functools.partial(_run, prepped=prepped, out=out, model_config=mcfg, train_config=tcfg,
                            progress=progress, log=log, resume=resume, cluster=cluster,
                            use_gpu=use_gpu)
    if not mlflow:
        return run(tracker=None)
    from ..tracking import training_run  # imports MLflow: only when asked for

    with training_run(experiment=mlflow_experiment, log=log) as tracker:
        metrics = run(tracker=tracker)
        tracker.finished(out=out, metrics=metrics, curves=CURVES_PNG)
    return metrics


def _processes(tcfg: TrainConfig, *, prepped, cluster: bool, use_gpu: bool) -> int:
    from .distributed import default_processes

    if tcfg.processes < 0:
        raise SparklstmError(f"train.processes must be >= 0 (0 = auto), got {tcfg.processes}")
    if use_gpu and not cluster:
        raise SparklstmError("use_gpu applies only with cluster=True (--cluster); "
                             "on this machine, train.device picks the GPU")
    if tcfg.processes:
        device = resolve_device(tcfg.device)
        if not cluster and device.startswith("cuda") and tcfg.processes > 1:
            import torch

            if tcfg.processes > torch.cuda.device_count():
                raise SparklstmError(f"{tcfg.processes} ranks need as many GPUs, this machine has "
                                     f"{torch.cuda.device_count()}; use --processes 1 or --device cpu")
        return tcfg.processes
    if cluster:
        raise SparklstmError("cluster training needs the number of ranks: train.processes "
                             "(--processes N), one Spark task slot each")
    train_tokens = ShardedSplit(Path(prepped) / "train", buffer_rows=1).tokens()  # ids lengths only
    planned = train_tokens * planned_epochs(tcfg, train_tokens=train_tokens)
    return default_processes(device=resolve_device(tcfg.device), batch_size=tcfg.batch_size,
                             planned_tokens=planned)


def _run(*, prepped, out, model_config, train_config, progress, log, resume, cluster, use_gpu,
         tracker) -> dict:
    """The loop in this process, or ranks through a launcher (distributed.py)."""
    load_prepped(prepped)  # a bad prepped/ fails here, once and in one line, before any rank starts
    processes = _processes(train_config, prepped=prepped, cluster=cluster, use_gpu=use_gpu)
    if processes == 1 and not cluster:
        return run_loop(prepped=prepped, out=out, model_config=model_config,
                        train_config=train_config, progress=progress, log=log, resume=resume,
                        tracker=tracker)
    from . import distributed

    job = distributed.Job(prepped=str(Path(prepped).resolve()), out=str(Path(out).resolve()),
                          model_config=as_dict(model_config),
                          train_config=as_dict(train_config) | {"processes": processes},
                          resume=resume, progress=progress)
    if cluster:
        metrics = distributed.launch_cluster(job, processes=processes, use_gpu=use_gpu, log=log)
    else:
        threads = train_config.num_threads or 1
        log(f"training with {processes} processes of {threads} thread{'s' * (threads > 1)} "
            "(data-parallel ranks)")
        metrics = distributed.launch_local(job, processes=processes, threads=threads)
    settings = metrics.pop("settings")
    if tracker is not None:  # the ranks cannot reach the parent's MLflow run while they train
        tracker.started(settings, prepped=prepped)
        for row in metrics["history"]:
            tracker.epoch(row)
    return metrics


def run_loop(*, prepped, out, model_config, train_config, progress, log, resume, tracker,
             ranks: Ranks = SINGLE, device: str | None = None) -> dict | None:
    """The training loop of one rank (of one process by default); ``tracker``
    (tracking.TrainingRun or None) is told the settings and each epoch as they happen. Returns
    metrics.json's content on rank 0, None on the others."""
    import torch

    mcfg = model_config or ModelConfig()
    tcfg = train_config or TrainConfig()
    vocab, labels, prep_info = load_prepped(prepped)
    max_len = prep_info["settings"]["max_len"]
    # Splits larger than the shuffle buffer are streamed from their Parquet shards (shards.py).
    train_split, val_split, test_split = (
        open_split(Path(prepped) / s, buffer_rows=tcfg.shuffle_buffer_rows) for s in ("train", "val", "test"))
    if mcfg.wide and isinstance(train_split, ShardedSplit):
        # The wide fit holds the train split's TF-IDF matrix in memory (~12 bytes per distinct
        # n-gram of each row); a split streamed because it is larger than the shuffle buffer
        # would not fit, so such a run trains the recurrent path alone (logged, and recorded in
        # the model's config).
        log(f"warning: the train split ({len(train_split):,} rows) is streamed from its shards; "
            f"the wide path needs it in memory, so this model is trained without it")
        mcfg = dataclasses.replace(mcfg, wide=False)
    if len(train_split) == 0:
        raise SparklstmError(f"{prepped}: the train split is empty")
    train_tokens = train_split.tokens()
    epochs = planned_epochs(tcfg, train_tokens=train_tokens)
    if epochs < tcfg.epochs:
        log(f"{epochs} epoch(s) instead of {tcfg.epochs}: the train split's {train_tokens:,} tokens "
            f"per epoch fit train.token_budget ({tcfg.token_budget:,}) that many times")
    counts = train_split.label_counts(len(labels))  # (C,)
    present = np.flatnonzero(counts)
    if len(present) < 2:
        raise SparklstmError(f"{prepped}: the train split has a single class ({labels[present[0]]!r})")

    device = device or resolve_device(tcfg.device)
    if tcfg.num_threads > 0 and ranks.world == 1:  # a rank's threads are set by its launcher
        torch.set_num_threads(tcfg.num_threads)
    # Denormal floats show up in LSTM gradients and are ~100x slower on x86 CPUs; flushing them
    # is harmless, and helped under load (bench/NOTES.md, "Training throughput").
    torch.set_flush_denormal(tcfg.flush_denormal)
    tune_allocator()  # no page faults for each batch's fresh buffers (+45% tokens/s measured)
    # auto times a GEMM: the ranks must agree, and rank 0's timing decides for all.
    precision = ranks.from_main(training_precision(tcfg.precision, device))
    seed_everything(tcfg.seed)
    rng = np.random.default_rng(tcfg.seed)

    from ..nn.model import LSTMClassifier

    model = LSTMClassifier(vocab_size=len(vocab), num_classes=len(labels), **as_dict(mcfg))
    wide_fit = None
    if model.wide is not None:
        # The wide path is logistic regression on TF-IDF features: fitted first, as the convex
        # problem it is (sparklstm/nn/wide.py), then held fixed while the recurrent path trains.
        model.wide.requires_grad_(False)
        if not resume and ranks.main:
            wide_fit = fit_wide(model.wide, train_split=train_split, val_split=val_split,
                                num_classes=len(labels), log=log)
        if not resume and ranks.world > 1:  # fitted once, on rank 0, and sent to the others
            wide_fit, fitted = ranks.from_main((wide_fit, model.wide.state_dict()))
            model.wide.load_state_dict(fitted)
    model = model.to(device)
    deep_params = [p for n, p in model.named_parameters() if not n.startswith("wide.")]
    optimizer = torch.optim.Adam(deep_params, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    class_weight = None
    if tcfg.class_weights == "balanced":  # (C,) n / (C * n_c) over the classes present
        balanced = np.where(counts > 0, counts.sum() / (len(present) * np.maximum(counts, 1)), 0.0)
        class_weight = torch.tensor(balanced, dtype=torch.float32, device=device)
    has_val = len(val_split) > 0
    select_on = val_split if has_val else train_split  # no val split: select on train (logged)
    if not has_val:
        log("warning: the val split is empty; early stopping watches the train split")

    settings = run_settings(model_config=as_dict(mcfg), device=device, precision=precision,
                            train_config=as_dict(tcfg) | {"processes": ranks.world}, prepped=prepped)
    # (B, T) ids -> (B, out) logits of the recurrent path; with several ranks through DDP, which
    # averages the gradients over the ranks during backward (in buckets, as they are ready).
    deep = model.deep_logits if ranks.world == 1 else data_parallel(model, device=device)
    if tracker is not None:
        tracker.started(settings, prepped=prepped)
    st = LoopState()
    if resume:  # weights, Adam moments, every RNG and the loop's counters of the last epoch
        st = resume_state(out, settings=settings, model=model, optimizer=optimizer, batch_rng=rng,
                          device=device)
        log(f"resuming after epoch {st.epoch}" + (" (training had ended)" if st.done else ""))
    elif wide_fit is not None:
        st.wide_fit = {"C": wide_fit.C, "val_macro_f1": wide_fit.val_macro_f1,
                       "fit_seconds": wide_fit.seconds}
    # The wide path's logits on the selection rows (fitted above, or restored by the resume) never
    # change: computed once, mixed with the recurrent path's after every epoch (the epoch and the
    # mix are chosen together).
    select_wide = None
    if model.wide is not None:
        select_wide, _ = split_logits(model.wide, select_on, device=device, ranks=ranks)
    bar = _progress(progress)
    with bar:
        for epoch in range(st.epoch + 1, 0 if st.done else epochs + 1):
            batches = train_batches(train_split, batch_size=tcfg.batch_size, rng=rng, ranks=ranks)
            total = -(-len(train_split) // tcfg.batch_size)  # exact in memory, about right streamed
            if ranks.world > 1:  # dropout masks differ by rank; a seed per epoch makes resume exact
                torch.manual_seed(ranks.torch_seed(tcfg.seed, epoch))
            steps_done = (epoch - 1) * total  # the schedule's position; the same after --resume
            task = bar.add_task(f"epoch {epoch}/{epochs}", total=total, loss=float("nan"),
                                f1=st.best_f1 if st.best_f1 >= 0 else float("nan"))
            model.train()
            started, loss_sum, tokens = time.perf_counter(), 0.0, 0
            step = 0
            for step, (part, rows) in enumerate(batches, 1):
                x, lengths, y = (t.to(device) for t in pad_batch(part, rows))
                with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                                    enabled=precision == "bf16"):
                    logits = deep(x, lengths)  # bf16 matmuls; fp32 weights and Adam
                loss = model.loss(logits, y, weight=class_weight)  # the loss is computed in fp32
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if tcfg.clip_norm > 0:
                    torch.nn.utils.clip_grad_norm_(deep_params, tcfg.clip_norm)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(tcfg, (steps_done + step - 1) / (epochs * total))
                optimizer.step()
                loss_sum += loss.item()
                tokens += int(part.lengths[rows].sum())
                bar.update(task, advance=1, loss=loss_sum / step)
            st.train_seconds += time.perf_counter() - started
            # Every rank's tokens and mean loss (a rank's loss is the mean over its share).
            per_rank = ranks.gather([(tokens, loss_sum, step)])
            st.real_tokens += sum(t for t, _, _ in per_rank)
            step = max(per_rank[0][2], 1)
            loss_sum = sum(l for _, l, _ in per_rank) / len(per_rank)
            val, mix = select_metrics(model, select_on, labels, select_wide, device=device,
                                      ranks=ranks)
            st.history.append({"epoch": epoch, "train_loss": loss_sum / max(step, 1),
                               "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"]}
                              | ({} if mix is None else {"mix": mix,
                                                         "val_macro_f1_deep": val["deep_macro_f1"]}))
            bar.update(task, f1=val["macro_f1"])
            if tracker is not None:
                tracker.epoch(st.history[-1])
            if not progress:  # a log file or a scheduler's log: one line per epoch instead
                log(f"epoch {epoch}/{epochs}: train loss {loss_sum / max(step, 1):.4f}, "
                    f"val macro-F1 {val['macro_f1']:.4f}"
                    + ("" if mix is None else f" (recurrent path alone {val['deep_macro_f1']:.4f},"
                                              f" wide share {mix:.2f})")
                    + f", {time.perf_counter() - started:.0f} s")
            if val["macro_f1"] > st.best_f1:
                st.best_f1, st.best_epoch, st.stale = val["macro_f1"], epoch, 0
                st.best_state = copy.deepcopy(model.state_dict())
            else:
                st.stale += 1
            st.epoch, st.done = epoch, st.stale >= tcfg.patience or epoch == epochs
            if ranks.main:  # the ranks hold the same weights and Adam moments
                save_checkpoint(out, state=st, settings=settings, model=model,
                                optimizer=optimizer, batch_rng=rng, device=device)
            if st.stale >= tcfg.patience:
                log(f"early stop after epoch {epoch}: no better val macro-F1 for {st.stale} epochs")
                break

    model.load_state_dict(st.best_state)
    if model.wide is not None:
        _, mix = select_metrics(model, select_on, labels, select_wide, device=device, ranks=ranks)
        model.wide.mix.fill_(mix if has_val else 0.5)
    evaluate = functools.partial(evaluate_split, model, labels=labels, device=device, ranks=ranks)
    metrics = {
        "val": evaluate(val_split) if has_val else None,
        "test": evaluate(test_split) if len(test_split) else None,
        "best_epoch": st.best_epoch,
        "epochs_planned": epochs,
        "history": st.history,
        "train_seconds": round(st.train_seconds, 2),
        "train_tokens_per_s": round(st.real_tokens / max(st.train_seconds, 1e-9), 1),
        "device": device,
        "precision": precision,
        "processes": ranks.world,
    }
    if model.wide is not None:
        metrics["wide"] = {"mix": float(model.wide.mix)} | (st.wide_fit or {})
    if not ranks.main:
        return None
    save_model(out, model=model, vocab=vocab, labels=labels, model_config=as_dict(mcfg),
               max_len=max_len, metrics=metrics, extra={"train": as_dict(tcfg)})
    from ..plots import training_curves

    training_curves(st.history, out=Path(out) / CURVES_PNG)  # loss and val macro-F1 per epoch
    remove_checkpoint(out)  # the model directory is complete; only an interrupted run needs it
    return metrics if ranks.world == 1 else metrics | {"settings": settings}  # for the launcher


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # On stderr, with the per-epoch lines: stdout stays for results (a shell pipes it on).
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("val macro-F1 {task.fields[f1]:.4f}"),
        TimeElapsedColumn(), disable=not enabled, transient=False, console=Console(stderr=True),
    )
