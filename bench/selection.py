"""Model selection on small validation sets: replay selection rules on recorded logits.

sparklstm picks two things on the validation split after every epoch: the mix of the wide and
recurrent paths, and whether the epoch is kept. On a 600-row validation split (spam) the chosen
model scored below the wide path alone on test. Retraining per rule would cost hours, so this
records every epoch's logits once and replays rules offline:

    python bench/selection.py record --prepped PREPPED --name spam --out runs/spam-s0.npz [--seed 0]
    python bench/selection.py replay runs/*.npz

``record`` trains with the default settings (the seed given, early stopping off so every epoch
is seen) and saves, per epoch, the recurrent path's logits on val and test, and once the wide
path's logits on both (evaluation order, labels beside). ``replay`` prints, per corpus, the test
macro-F1 (mean over the recorded seeds) of the model each rule would have kept.
Test logits are read only to score the rules, never by a rule.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from sparklstm import train
from sparklstm.config import TrainConfig
from sparklstm.metrics import confusion_matrix, report
from sparklstm.nn.wide import MIX_GRID, nll, predicted
from sparklstm.training import loop
from sparklstm.training.data import read_split


def record(*, prepped: Path, name: str, out: Path, seed: int, threads: int) -> None:
    test_split = read_split(prepped / "test")
    epochs: list[dict] = []
    original = loop.select_metrics

    def recording(model, split, labels, wide_logits, *, device):
        # The loop's own selection runs unchanged; the logits it sees (and test's) are kept.
        model.eval()
        deep_val, y_val = loop.split_logits(model.deep_logits, split, device=device)
        deep_test, y_test = loop.split_logits(model.deep_logits, test_split, device=device)
        if not epochs:
            wide_test, _ = loop.split_logits(model.wide, test_split, device=device)
            epochs.append({"wide_val": wide_logits, "wide_test": wide_test, "y_val": y_val,
                           "y_test": y_test})
        epochs.append({"deep_val": deep_val, "deep_test": deep_test})
        return original(model, split, labels, wide_logits, device=device)

    loop.select_metrics = recording
    try:
        cfg = dataclasses.replace(TrainConfig(), seed=seed, patience=10**6, num_threads=threads)
        metrics = train(prepped=prepped, out=out.with_suffix(".model"), train_config=cfg,
                        progress=False, log=lambda s: print(s, file=sys.stderr, flush=True))
    finally:
        loop.select_metrics = original
    # train() selects once more after the loop, on the kept epoch's weights: not an epoch.
    head, rest = epochs[0], epochs[1:1 + len(metrics["history"])]
    np.savez_compressed(
        out, corpus=name, seed=seed, num_classes=len(metrics["test"]["per_class"]),
        **{k: v.numpy() for k, v in head.items()},
        deep_val=np.stack([e["deep_val"].numpy() for e in rest]),
        deep_test=np.stack([e["deep_test"].numpy() for e in rest]))
    print(f"{out}: {len(rest)} epochs, test macro-F1 of the run {metrics['test']['macro_f1']:.4f}")


def macro_f1(logits: torch.Tensor, y: torch.Tensor, c: int) -> float:
    names = [str(i) for i in range(c)]
    return report(confusion_matrix(y.numpy(), predicted(logits).numpy(), c), names)["macro_f1"]


def mix_scores(deep, wide, y, c):
    """Per mix of the grid: (macro-F1, NLL) on these rows."""
    out = []
    for m in MIX_GRID:
        logits = (1 - m) * deep + m * wide
        out.append((macro_f1(logits, y, c), nll(logits, y)))
    return out


def smooth(values):
    return [float(np.mean(values[max(0, i - 1):i + 2])) for i in range(len(values))]


# A rule maps one epoch's (F1, NLL) per mix to (mix index, the epoch's score; higher is better).
def f1_smoothed(scores):  # the rule before: smoothed macro-F1, ties to the lower NLL
    s = smooth([f for f, _ in scores])
    i = max(range(len(scores)), key=lambda k: (round(s[k], 12), -scores[k][1]))
    return i, scores[i][0]


def by_nll(scores):  # the proper scoring rule: lowest log loss picks mix and epoch
    i = min(range(len(scores)), key=lambda k: scores[k][1])
    return i, -scores[i][1]


def nll_mix_f1_epoch(scores):  # the default (wide.choose_mix): mix by log loss, epoch by F1
    i = min(range(len(scores)), key=lambda k: (scores[k][1], -MIX_GRID[k]))
    return i, scores[i][0]


RULES = {"f1 smoothed (before)": f1_smoothed, "nll (mix and epoch)": by_nll,
         "nll mix, f1 epoch (now)": nll_mix_f1_epoch}


def replay_run(run, rule, *, patience: int = TrainConfig().patience) -> float:
    """Test macro-F1 of the epoch and mix ``rule`` keeps, stopping as train() would after
    ``patience`` epochs without a better score."""
    c = int(run["num_classes"])
    as_t = {k: torch.from_numpy(run[k]) for k in ("wide_val", "wide_test", "y_val", "y_test")}
    best, stale = None, 0
    for e in range(run["deep_val"].shape[0]):
        deep_val = torch.from_numpy(run["deep_val"][e])
        i, score = rule(mix_scores(deep_val, as_t["wide_val"], as_t["y_val"], c))
        if best is None or score > best[0]:
            best, stale = (score, e, MIX_GRID[i]), 0
        else:
            stale += 1
            if stale >= patience:
                break
    _, e, m = best
    logits = (1 - m) * torch.from_numpy(run["deep_test"][e]) + m * as_t["wide_test"]
    return macro_f1(logits, as_t["y_test"], c)


def replay(paths: list[Path]) -> None:
    runs = defaultdict(list)
    for p in paths:
        run = dict(np.load(p))
        # Files recorded before the fix above hold the final selection pass as an extra entry:
        # a copy of the kept epoch's logits.
        deep = run["deep_val"]
        if len(deep) > 1 and any(np.array_equal(deep[-1], d) for d in deep[:-1]):
            run["deep_val"], run["deep_test"] = deep[:-1], run["deep_test"][:-1]
        runs[str(run["corpus"])].append(run)
    print(f"{'corpus':<10} {'rule':<24} {'test macro-F1 mean ± std (seeds)':>36}  wide alone")
    for corpus, rs in sorted(runs.items()):
        c = int(rs[0]["num_classes"])
        wide = macro_f1(torch.from_numpy(rs[0]["wide_test"]), torch.from_numpy(rs[0]["y_test"]), c)
        for name, rule in RULES.items():
            f1 = [replay_run(r, rule) for r in rs]
            spread = statistics.stdev(f1) if len(f1) > 1 else 0.0
            print(f"{corpus:<10} {name:<24} {statistics.mean(f1):>11.4f} ± {spread:.4f} "
                  f"({', '.join(f'{x:.4f}' for x in f1)})  {wide:.4f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--prepped", type=Path, required=True)
    r.add_argument("--name", required=True, help="the corpus's name in the table")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p = sub.add_parser("replay")
    p.add_argument("runs", type=Path, nargs="+")
    a = ap.parse_args(argv)
    if a.cmd == "record":
        record(prepped=a.prepped, name=a.name, out=a.out, seed=a.seed, threads=a.threads)
    else:
        replay(a.runs)


if __name__ == "__main__":
    main()
