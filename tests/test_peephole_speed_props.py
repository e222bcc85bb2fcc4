"""The fast peephole layer (sparklstm/nn/peephole.py): same numbers and gradients as the seed's
autograd loop, gradcheck, padding invariance, inference/autocast paths, and the structure that
makes it fast (one projection matmul, O(1) graph nodes in T, faster than the loop)."""

from __future__ import annotations

import time

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sparklstm.nn.model import LSTMClassifier, PeepholeLSTM, RecurrentStack
from sparklstm.nn.peephole import peephole_reference


def _layer(D: int, H: int, *, seed: int, dtype=torch.float64, scale: float = 0.5) -> PeepholeLSTM:
    """A PeepholeLSTM with every weight (peepholes included) random and non-zero."""
    gen = torch.Generator().manual_seed(seed)
    layer = PeepholeLSTM(D, H).to(dtype)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale)
    return layer


def _x(B, T, D, *, seed, dtype=torch.float64, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, D, dtype=dtype, generator=gen).requires_grad_(requires_grad)


@pytest.fixture
def one_thread():
    """Many tiny matmuls: on a shared 2-core CPU a second OpenMP thread can stall on each one
    (seconds in all); one thread keeps these tests fast and changes no result."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _grads(out, inputs, grad_out, **kw):
    return torch.autograd.grad(out, inputs, grad_out, **kw)


@pytest.mark.parametrize("B,T,D,H", [(3, 7, 5, 6), (1, 1, 2, 3), (4, 12, 3, 8)])
def test_outputs_and_gradients_equal_the_autograd_loop(B, T, D, H):
    """Float64: h for every step and the gradients w.r.t. x and every parameter equal the seed's
    loop through autograd (peephole_reference), with a random gradient on every output step."""
    layer = _layer(D, H, seed=B * 100 + T)
    params = list(layer.parameters())
    x = _x(B, T, D, seed=1, requires_grad=True)
    got = layer(x)
    want = peephole_reference(x, *params)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    g = torch.randn(got.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for a, b in zip(_grads(got, [x, *params], g), _grads(want, [x, *params], g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_float32_matches_the_autograd_loop():
    """Float32 (tanh is computed as 2σ(2z) - 1 inside): within float32 rounding of the loop."""
    layer = _layer(16, 24, seed=3, dtype=torch.float32)
    params = list(layer.parameters())
    x = _x(5, 30, 16, seed=4, dtype=torch.float32, requires_grad=True)
    got, want = layer(x), peephole_reference(x, *params)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)
    g = torch.randn(got.shape, generator=torch.Generator().manual_seed(5))
    for a, b in zip(_grads(got, [x, *params], g), _grads(want, [x, *params], g)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_gradcheck_tiny_layer(one_thread):
    """torch.autograd.gradcheck in float64 on B=2, T=4, D=3, H=5 (x and all parameters)."""
    layer = _layer(3, 5, seed=6)
    names = [n for n, _ in layer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())
    x = _x(2, 4, 3, seed=7, requires_grad=True)

    def fn(x, *ps):
        return torch.func.functional_call(layer, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-6)


def test_gradcheck_parameters_only(one_thread):
    """The input needs no gradient (the backward skips dx); parameters still check out."""
    layer = _layer(3, 4, seed=8)
    names = [n for n, _ in layer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())
    x = _x(2, 3, 3, seed=9)

    def fn(*ps):
        return torch.func.functional_call(layer, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-6)


def test_retain_graph_backward_twice_gives_the_same_gradients():
    """With retain_graph the saved state is not consumed: a second backward is identical, and
    both equal the single (state-consuming) backward of a fresh graph."""
    layer = _layer(3, 4, seed=10)
    params = list(layer.parameters())
    x = _x(2, 6, 3, seed=11, requires_grad=True)
    out = layer(x)
    g = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    first = _grads(out, [x, *params], g, retain_graph=True)
    second = _grads(out, [x, *params], g)
    fresh = _grads(layer(x), [x, *params], g)
    for a, b, c in zip(first, second, fresh):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c, rtol=0, atol=1e-14)


def test_right_padding_does_not_change_earlier_steps():
    """Outputs at steps < n do not depend on the inputs at steps >= n (forward), and a loss on
    steps < n gives the same gradients whatever the padded inputs are (backward)."""
    layer = _layer(3, 5, seed=13)
    params = list(layer.parameters())
    x = _x(3, 9, 3, seed=14)
    n = 5
    garbage = x.clone()
    garbage[:, n:] = 10 * torch.randn(3, 9 - n, 3, dtype=torch.float64)
    short = layer(x[:, :n])
    for padded in (x, garbage):
        full = layer(padded)
        torch.testing.assert_close(full[:, :n], short, rtol=0, atol=1e-14)
        g_full = _grads(full[:, :n].sum(), params, None)
        g_short = _grads(layer(x[:, :n]).sum(), params, None)
        for a, b in zip(g_full, g_short):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_classifier_training_gradients_ignore_padding():
    """Training mode, no dropout: the classifier's parameter gradients are the same whether
    padding positions hold 0 or real-looking ids."""
    torch.manual_seed(0)
    model = LSTMClassifier(vocab_size=30, num_classes=3, cell="peephole", embed_dim=6,
                           hidden_size=7, num_layers=2, dropout=0.0).double().train()
    ids = torch.tensor([[5, 6, 7, 0, 0, 0], [8, 9, 10, 11, 12, 13]])
    lengths = torch.tensor([3, 6])
    y = torch.tensor([2, 0])
    garbage = ids.clone()
    garbage[0, 3:] = torch.tensor([20, 21, 22])

    def grads(i):
        model.zero_grad()
        model.loss(model(i, lengths), y).backward()
        return [p.grad.clone() for p in model.parameters()]

    for name_p, a, b in zip([n for n, _ in model.named_parameters()], grads(ids), grads(garbage)):
        if name_p == "embedding.weight":  # the garbage ids' rows get no gradient either way
            continue
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


def test_no_grad_path_equals_training_path():
    """Inference (no_grad / inference_mode: rolling buffers) gives the training forward's h."""
    layer = _layer(4, 6, seed=15)
    x = _x(3, 8, 4, seed=16)
    with_grad = layer(x.clone().requires_grad_(True)).detach()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), with_grad, rtol=0, atol=1e-14)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), with_grad, rtol=0, atol=1e-14)


def test_inference_mode_first_then_training():
    """A first call under inference_mode must not leave inference tensors behind (cached gate
    permutation) that break a later training forward/backward."""
    layer = PeepholeLSTM(5, 9)  # a hidden size no other test uses
    x = torch.randn(2, 3, 5)
    with torch.inference_mode():
        layer(x)
    layer(x.requires_grad_(True)).sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


def test_bf16_autocast_inference_runs_and_stays_close():
    """Under CPU bf16 autocast (the scorer's precision=bf16) the classifier runs; the recurrence
    stays in float32 and the probabilities are close to fp32's."""
    torch.manual_seed(1)
    model = LSTMClassifier(vocab_size=40, num_classes=3, cell="peephole", embed_dim=8,
                           hidden_size=12).eval()
    ids = torch.randint(2, 40, (4, 10))
    lengths = torch.tensor([10, 4, 7, 1])
    with torch.inference_mode():
        ref = model.probabilities(model(ids, lengths))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert model.rnn(model.embedding(ids)).dtype == torch.float32
            got = model.probabilities(model(ids, lengths))
    torch.testing.assert_close(got, ref, rtol=0, atol=2e-2)


def test_bf16_autocast_training_close_to_fp32():
    """Under CPU bf16 autocast (train.py's precision=bf16) the matmuls run in bf16 and the state
    in fp32: h and every gradient stay within bf16 rounding of the fp32 loop (the loop itself
    under autocast is no closer), and the output stays float32."""
    layer = _layer(16, 24, seed=17, dtype=torch.float32)
    params = list(layer.parameters())
    x = _x(4, 20, 16, seed=18, dtype=torch.float32, requires_grad=True)
    g = torch.randn(4, 20, 24, generator=torch.Generator().manual_seed(19))
    want = peephole_reference(x, *params)
    want_grads = _grads(want, [x, *params], g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=2e-2)
    for a, b in zip(_grads(got, [x, *params], g), want_grads):
        assert (a - b).norm() <= 2e-2 * b.norm()
    # Inference under autocast computes the same forward as training under autocast.
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(layer(x.detach()), got.detach(), rtol=0, atol=1e-6)


def test_zero_length_sequence():
    """T = 0 gives an empty (B, 0, H) output and zero gradients, not a crash."""
    layer = PeepholeLSTM(3, 4)
    x = torch.randn(2, 0, 3, requires_grad=True)
    out = layer(x)
    assert out.shape == (2, 0, 4)
    out.sum().backward()
    assert layer.weight_hh.grad.abs().sum() == 0


# ----------------------------------------------------------------------------- speed structure


class _CountMatmuls(TorchDispatchMode):
    """Counts matrix products (mm/addmm/bmm/...) and records their shapes."""

    NAMES = ("mm", "addmm", "bmm", "baddbmm", "addmv", "mv", "matmul", "linear", "dot")

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__.rstrip("_") in self.NAMES:
            self.calls.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_one_projection_matmul_and_one_recurrent_matmul_per_step():
    """Forward: 1 matmul for all steps' input projections + 1 per step. Backward: 1 per step
    (but the last) + one each for dx, dW_ih and dW_hh over all steps."""
    T = 9
    layer = PeepholeLSTM(4, 6)
    x = torch.randn(2, T, 4, requires_grad=True)
    with _CountMatmuls() as fwd:
        out = layer(x)
    assert len(fwd.calls) == 1 + T, fwd.calls
    with _CountMatmuls() as bwd:
        out.sum().backward()
    assert len(bwd.calls) == (T - 1) + 3, bwd.calls


def _graph_nodes(t: torch.Tensor) -> int:
    seen, stack = set(), [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(n for n, _ in node.next_functions)
    return len(seen)


def test_autograd_graph_size_does_not_grow_with_length():
    """The recurrence is one graph node (hand-written backward through time), so the graph of a
    stacked layer has the same size for 3 and 60 steps; the seed's loop grows with T."""
    stack = RecurrentStack("peephole", 4, 5, num_layers=2, dropout=0.0)
    sizes = {T: _graph_nodes(stack(torch.randn(2, T, 4, requires_grad=True))) for T in (3, 60)}
    assert sizes[3] == sizes[60], sizes
    layer = stack.layers[0]
    ref = [_graph_nodes(peephole_reference(torch.randn(2, T, 4), *layer.parameters()))
           for T in (3, 60)]
    assert ref[1] > ref[0] + 50


def test_faster_than_the_autograd_loop(one_thread):
    """Forward + backward of one layer is clearly faster than the seed's loop (measured ~3x;
    the bar is 1.5x, best of 5 interleaved runs on one thread, to stay robust on a shared CPU)."""
    torch.manual_seed(0)
    layer = PeepholeLSTM(32, 32)
    params = list(layer.parameters())
    x = torch.randn(16, 60, 32, requires_grad=True)

    def new():
        layer(x).sum().backward()

    def old():
        peephole_reference(x, *params).sum().backward()

    best = {"new": float("inf"), "old": float("inf")}
    new(), old()
    for _ in range(5):
        for name, fn in (("new", new), ("old", old)):
            started = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - started)
    assert best["old"] / best["new"] > 1.5, best
