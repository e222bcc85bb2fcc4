"""Integrated gradients over the embeddings of an LSTMClassifier, batched, with steps handled.

For a text with embeddings ``e`` (T, E) and the all-``<pad>`` baseline ``b`` (the zero row of
``padding_idx=0``), with ``F`` the explained score and ``x(alpha) = b + alpha (e - b)``::

    IG_t = integral_0^1 dF/dx_t(x(alpha)) . (e_t - b) d alpha,     sum_t IG_t = F(e) - F(b)

The integral is a Gauss-Legendre rule; every (text, alpha) pair is one row of a batch, so a batch
of texts costs a few forward/backward passes.

**Steps of F.** A trained LSTM reading a long sequence is often bistable: along the path, F can
switch from one attractor to the other between two adjacent float32 alphas (the demo model: F goes
from +4.26 to -4.79 near alpha = 0.0219 on most e-mails predicted ham). No quadrature sees such a
step, so completeness would fail by its size. So the path is first scanned with forward passes
only (cheap); an interval carrying a large share of F's change is narrowed by bisection:

* down to float32 resolution, it is a step. Its change of F is attributed in proportion to
  ``dF/dx_t . (e_t - b)`` at the step: the limit of IG over a transition whose gradient direction
  is constant (measured: correlation >= 0.996 between points 1e-7 apart on either side);
* where the change spreads over several sub-intervals, it is a steep region: those sub-intervals
  become pieces, with Gauss-Legendre nodes in proportion to F's change over each.

The pieces between are integrated by Gauss-Legendre. Where a text's completeness error still
exceeds ``REFINE_TOL``, its worst piece is split the same way, for up to ``MAX_ROUNDS`` rounds,
and the best result is kept. The remaining error is reported (Explanation.completeness_error).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..text import PAD

# Rows x padded length per forward pass. IG's backward keeps ~ 10 floats per token per hidden unit
# and layer, so 32k tokens stay under ~200 MB at H = 128, 2 layers.
MAX_TOKENS = 32768
SCAN = 32  # forward-only points on the path, to find steps before any gradient is taken
SHARP = 0.25  # a scan interval with this share of F's total variation is bisected
REFINE_TOL = 0.02  # relative completeness error above which a text's worst pieces are split
MAX_ROUNDS = 2
NODE_CAP = 4  # no more refining once a text's path has NODE_CAP * steps nodes
SECTIONS = 8  # bisection: an interval is cut in 8 per forward pass
MIN_NODES = 4
JUMP_PAD = 2e-6  # a step's piece reaches this far (in alpha) to either side of it
DELTA_FLOOR = 1e-3  # |F(e) - F(b)| below this is "no change": errors are relative to the floor


@dataclass
class PathResult:
    """IG of one text: attributions (T,), F at the text and at the baseline, steps located."""

    attributions: np.ndarray
    score: float
    baseline_score: float
    jumps: int = 0

    @property
    def gap(self) -> float:
        return abs(float(self.attributions.sum()) - (self.score - self.baseline_score))

    @property
    def relative_error(self) -> float:
        return self.gap / max(abs(self.score - self.baseline_score), DELTA_FLOOR)


def class_score(logits, target):
    """The predicted class's signed logit (R,) from logits (R, 1) or (R, C) and classes (R,).

    With one logit ``z`` (sigmoid), class 1 scores ``z`` and class 0 scores ``-z``, so a positive
    attribution always pushes toward the predicted class.
    """
    import torch

    if logits.shape[1] == 1:
        return torch.where(target == 1, logits[:, 0], -logits[:, 0]).float()
    return logits.gather(1, target[:, None])[:, 0].float()


def forward_with_embeddings(model, ids, lengths, embedded):
    """``model(ids, lengths)`` with the embedding layer's output replaced by ``embedded``.

    A forward hook keeps LSTMClassifier.forward the one definition of the network (dropout,
    reading the last real step) rather than a copy of it here.
    """
    handle = model.embedding.register_forward_hook(lambda module, inputs, output: embedded)
    try:
        return model(ids, lengths)
    finally:
        handle.remove()


def integrated_gradients(model, ids: list[np.ndarray], classes: np.ndarray, *, steps: int = 50,
                         device: str = "cpu") -> list[PathResult]:
    """IG of each text (non-empty id arrays) for its class in ``classes``; batched.

    The caller sets up gradients (see attribution.py: eval mode, cuDNN off on CUDA).

    Example
    -------
    >>> r = integrated_gradients(model, [np.array([5, 9, 2])], np.array([1]))   # doctest: +SKIP
    >>> r[0].attributions.sum(), r[0].score - r[0].baseline_score               # doctest: +SKIP
    (2.4117, 2.4118)
    """
    paths = {i: _Path(len(a), [_Piece(0.0, 1.0, "quad", steps)]) for i, a in enumerate(ids)}
    _scan(model, ids, classes, paths, steps=steps, device=device)
    best: dict[int, PathResult] = {}
    todo = list(paths)
    for round_ in range(MAX_ROUNDS + 1):
        _integrate(model, ids, classes, {i: paths[i] for i in todo}, device=device)
        for i in todo:
            # Refining can make it worse: near a step, rounding noise moves F a little.
            result = paths[i].result()
            if i not in best or result.gap < best[i].gap:
                best[i] = result
        todo = [i for i in todo if best[i].relative_error > REFINE_TOL
                and sum(p.q for p in paths[i].pieces) < NODE_CAP * steps]
        if not todo or round_ == MAX_ROUNDS:
            break
        jobs = []
        for i in todo:  # the piece whose quadrature is furthest from F's change over it
            worst = max(paths[i].pieces, key=lambda p, path=paths[i]: abs(path.error(p)))
            if paths[i].error(worst) != 0.0:
                jobs.append((i, worst.a, worst.b))
        todo = _bisect(model, ids, classes, paths, jobs, nodes=max(MIN_NODES, steps // 8),
                       budget=steps // 2, device=device)
    return [best[i] for i in range(len(ids))]


# ----------------------------------------------------------------------------- the path's pieces


@dataclass
class _Piece:
    """An interval [a, b] of alpha: integrated by ``q`` Gauss-Legendre nodes ("quad"), or a step
    of F narrower than float32 resolution ("jump")."""

    a: float
    b: float
    kind: str
    q: int = 0
    integral: np.ndarray | None = None  # (T,): sum over nodes of w_k * v_k, once evaluated
    centre: float | None = None  # a jump's position, where its gradient direction is read
    steep: bool = False


@dataclass
class _Path:
    """One text's path: its pieces, and F and v = dF/dx . (e - b) (T,) at piece boundaries."""

    length: int
    pieces: list[_Piece]
    at: dict = field(default_factory=dict)  # alpha -> (F, v (T,))

    def error(self, p: _Piece) -> float:
        """How far a piece's quadrature is from F's actual change over it (0 for a jump)."""
        if p.kind == "jump":
            return 0.0
        return float(p.integral.sum()) - (self.at[p.b][0] - self.at[p.a][0])

    def result(self) -> PathResult:
        attr = np.zeros(self.length)
        for p in self.pieces:
            if p.kind == "quad":
                attr += p.integral
            else:
                # The step's change of F, shared in proportion to the gradient direction at
                # its centre (there the gradient is huge and points across the step).
                side = self.at[p.centre][1]
                if abs(side.sum()) > 1e-12:
                    attr += (self.at[p.b][0] - self.at[p.a][0]) * side / side.sum()
        return PathResult(attributions=attr, score=self.at[1.0][0], baseline_score=self.at[0.0][0],
                          jumps=sum(p.kind == "jump" for p in self.pieces))

    def split(self, lo: float, hi: float, cells: list | None, *, nodes: int) -> None:
        """Cut [lo, hi] out of the piece that holds it: as a jump (``cells`` None) or as steep
        pieces ``cells`` = [(a, b, nodes)]; the rest of the piece either side gets ``nodes``."""
        piece = next((p for p in self.pieces if p.a <= lo and hi <= p.b and p.kind == "quad"), None)
        if piece is None:  # already inside a neighbour's cut
            return
        if cells is None:
            # Right at a step, rounding decides which side a point falls on, and that differs
            # with the batch a row is computed in; F is read a little away, where it is stable.
            centre = lo
            pad = max(JUMP_PAD, 64 * float(np.spacing(np.float32(hi))))
            lo = float(np.float32(max(piece.a, lo - pad)))
            hi = float(np.float32(min(piece.b, hi + pad)))
            middle = [_Piece(lo, hi, "jump", centre=centre)]
        else:
            middle = [_Piece(a, b, "quad", int(q), steep=True) for a, b, q in cells]
        new = [_Piece(piece.a, lo, "quad", nodes)] * (lo > piece.a) + middle \
            + [_Piece(hi, piece.b, "quad", nodes)] * (hi < piece.b)
        k = self.pieces.index(piece)
        self.pieces[k : k + 1] = new


def _gauss(lo: float, hi: float, n: int):
    x, w = np.polynomial.legendre.leggauss(n)
    return (lo + (x + 1) * (hi - lo) / 2).astype(np.float32), w * (hi - lo) / 2


def _integrate(model, ids, classes, paths: dict, *, device: str) -> None:
    """Gradients at the nodes of every piece not yet integrated, F (and v) at new boundaries."""
    requests, plans = [], []
    for i, path in paths.items():
        todo = [p for p in path.pieces if p.kind == "quad" and p.integral is None]
        nodes = [_gauss(p.a, p.b, p.q) for p in todo]
        points = {x for p in path.pieces for x in (p.a, p.b, p.centre) if x is not None}
        bounds = sorted(points - path.at.keys())
        requests.append((i, np.concatenate([a for a, _ in nodes] + [np.asarray(bounds, np.float32)])))
        plans.append((path, todo, nodes, bounds))
    evaluated = _evaluate(model, ids, classes, requests, grad=True, device=device)
    for (path, todo, nodes, bounds), (f, v) in zip(plans, evaluated):
        k = 0
        for piece, (a, w) in zip(todo, nodes):
            piece.integral = w @ v[k : k + len(a)]  # (T,)
            k += len(a)
        for x in bounds:
            path.at[x] = (float(f[k]), v[k])
            k += 1


# ----------------------------------------------------------------------------- finding steps


def _scan(model, ids, classes, paths: dict, *, steps: int, device: str) -> None:
    """Forward-only F at SCAN + 1 points per text; bisect the intervals carrying a SHARP share of
    F's variation, then share ``steps`` nodes among the smooth pieces by length."""
    grid = np.linspace(0.0, 1.0, SCAN + 1).astype(np.float32)
    evaluated = _evaluate(model, ids, classes, [(i, grid) for i in paths], grad=False, device=device)
    jobs = []
    for i, (f, _) in zip(paths, evaluated):
        d = np.abs(np.diff(f))
        jobs += [(i, float(grid[k]), float(grid[k + 1]), float(f[k]), float(f[k + 1]))
                 for k in np.flatnonzero(d >= SHARP * max(d.sum(), DELTA_FLOOR))]
    changed = _bisect(model, ids, classes, paths, jobs, nodes=MIN_NODES, budget=steps // 2,
                      device=device)
    for i in changed:
        smooth = [p for p in paths[i].pieces if p.kind == "quad" and not p.steep]
        total = sum(p.b - p.a for p in smooth)
        for p in smooth:
            p.q = max(MIN_NODES, round(steps * (p.b - p.a) / total))


def _bisect(model, ids, classes, paths: dict, jobs: list, *, nodes: int, budget: int,
            device: str) -> list[int]:
    """Narrow each job's interval by forward-only bisection and cut it out of its path.

    A job is ``(text, lo, hi[, F(lo), F(hi)])``. Each pass cuts an interval into SECTIONS and
    keeps the sub-interval carrying at least half of F's change. At float32 resolution that is a
    step ("jump"). Once the change spreads over sub-intervals, it is a steep region: the
    sub-intervals of this level and of the level above become pieces, sharing ``budget`` nodes
    in proportion to F's change over each (at least 2 each). The rest of the job's piece, either
    side, gets ``nodes``. Returns the texts whose paths changed.
    """
    state = {}
    for n, (i, lo, hi, *f) in enumerate(jobs):
        f_lo, f_hi = f or (paths[i].at[lo][0], paths[i].at[hi][0])
        state[n] = (i, lo, hi, f_lo, f_hi, None)
    cuts = []
    while state:
        inner = {n: _interior(st[1], st[2]) for n, st in state.items()}
        keys = [n for n, pts in inner.items() if len(pts)]
        evaluated = dict(zip(keys, _evaluate(model, ids, classes, [(state[n][0], inner[n]) for n in keys],
                                             grad=False, device=device)))
        for n in list(state):
            i, lo, hi, f_lo, f_hi, above = state.pop(n)
            if n not in evaluated:  # adjacent float32 alphas
                cuts.append((i, lo, hi, None))
                continue
            xs, fs = np.r_[lo, inner[n], hi], np.r_[f_lo, evaluated[n][0], f_hi]
            j = int(np.argmax(np.abs(np.diff(fs))))
            if abs(fs[j + 1] - fs[j]) >= 0.5 * abs(f_hi - f_lo):
                state[n] = (i, float(xs[j]), float(xs[j + 1]), float(fs[j]), float(fs[j + 1]), (xs, fs))
                continue
            if above is not None:  # this level's points replace [lo, hi] among the level above's
                keep = (above[0] < lo) | (above[0] > hi)
                xs, fs = np.r_[above[0][keep], xs], np.r_[above[1][keep], fs]
                order = np.argsort(xs, kind="stable")
                xs, fs = xs[order], fs[order]
            share = np.abs(np.diff(fs)) / max(np.abs(np.diff(fs)).sum(), 1e-12)
            q = np.maximum(2, np.round(budget * share)).astype(int)
            cuts.append((i, float(xs[0]), float(xs[-1]), list(zip(xs[:-1].tolist(), xs[1:].tolist(), q))))
    for i, lo, hi, cells in cuts:
        paths[i].split(lo, hi, cells, nodes=nodes)
    return sorted({i for i, _, _, _ in cuts})


def _interior(lo: float, hi: float) -> np.ndarray:
    """Up to SECTIONS - 1 distinct float32 alphas strictly inside (lo, hi)."""
    pts = np.unique(np.linspace(lo, hi, SECTIONS + 1)[1:-1].astype(np.float32))
    return pts[(pts > np.float32(lo)) & (pts < np.float32(hi))]


# ----------------------------------------------------------------------------- batched evaluation


def _evaluate(model, ids, classes, requests: list[tuple[int, np.ndarray]], *, grad: bool,
              device: str) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """F and, with ``grad``, v = dF/dx . (e - b) per token, at each requested (text, alphas).

    Every (text, alpha) is one row; rows are sorted by text length and cut into batches of at
    most MAX_TOKENS padded tokens. Returns per request (F (m,), v (m, T_i) or None).
    """
    import torch

    out = [(np.empty(len(a)), np.empty((len(a), len(ids[i]))) if grad else None) for i, a in requests]
    rows = sorted(((i, float(a), r, k) for r, (i, alphas) in enumerate(requests)
                   for k, a in enumerate(alphas)), key=lambda row: len(ids[row[0]]))
    base = model.embedding.weight[PAD].detach()  # (E,): the <pad> row, zero by padding_idx
    budget = MAX_TOKENS if grad else 4 * MAX_TOKENS  # forward only keeps no activations
    start = 0
    while start < len(rows):
        end = start + 1  # rows are length-sorted, so the last row of a batch is its longest
        while end < len(rows) and (end + 1 - start) * len(ids[rows[end][0]]) <= budget:
            end += 1
        batch, start = rows[start:end], end
        texts = sorted({i for i, _, _, _ in batch})
        pos = {i: j for j, i in enumerate(texts)}
        lengths = torch.tensor([len(ids[i]) for i in texts], device=device)
        x = torch.zeros(len(texts), int(lengths.max()), dtype=torch.long)
        for j, i in enumerate(texts):
            x[j, : len(ids[i])] = torch.from_numpy(np.asarray(ids[i], dtype=np.int64))
        x = x.to(device)  # (u, T)
        sel = torch.tensor([pos[i] for i, _, _, _ in batch], device=device)  # (R,)
        alpha = torch.tensor([a for _, a, _, _ in batch], dtype=torch.float32, device=device)
        target = torch.tensor([int(classes[i]) for i, _, _, _ in batch], device=device)
        with torch.set_grad_enabled(grad):
            with torch.no_grad():
                delta = model.embedding(x)[sel] - base  # (R, T, E); zero on padding
            path = base + alpha[:, None, None] * delta  # (R, T, E)
            if grad:
                path.requires_grad_(True)
            f = class_score(forward_with_embeddings(model, x[sel], lengths[sel], path), target)  # (R,)
            if grad:
                # Rows are independent, so d(sum F)/d path holds each row's own gradient.
                (g,) = torch.autograd.grad(f.sum(), path)  # (R, T, E)
                v = (g * delta).sum(-1).double().cpu().numpy()  # (R, T)
        f = f.detach().double().cpu().numpy()
        for n, (i, _, r, k) in enumerate(batch):
            out[r][0][k] = f[n]
            if grad:
                out[r][1][k] = v[n, : len(ids[i])]
    return out
