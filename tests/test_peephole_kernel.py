"""The peephole layer's fused C step (sparklstm/nn/peephole_step.c) against its torch-kernel steps.

Both paths run the same equations on the same buffers; ``SPARKLSTM_PEEPHOLE_KERNEL=0`` selects
the torch kernels. The equations themselves are checked in test_model.py and
test_peephole_speed_props.py, which run with the C step wherever it builds.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from sparklstm.nn import peephole_kernel
from sparklstm.nn.model import LSTMClassifier
from sparklstm.nn.peephole import peephole_layer_time_major

pytestmark = pytest.mark.skipif(peephole_kernel.step_kernel() is None,
                                reason="no working C compiler here: the torch steps are used")


def _layer(T, B, D, H, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, D, generator=g).requires_grad_()
    params = [(torch.randn(*shape, generator=g) * 0.3).requires_grad_()
              for shape in ((4 * H, D), (4 * H, H), (4 * H,), (3, H))]
    return x, params, torch.randn(T, B, H, generator=g)


def _run(monkeypatch, x, params, gout, *, kernel: bool, autocast: bool = False):
    monkeypatch.setenv(peephole_kernel.ENV, "1" if kernel else "0")
    for p in (x, *params):
        p.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        h = peephole_layer_time_major(x, *params)
    (h.float() * gout).sum().backward()
    return h.detach().float(), [p.grad.clone() for p in (x, *params)]


@pytest.mark.parametrize("T, B, D, H", [(7, 3, 6, 5), (33, 17, 24, 40), (1, 1, 2, 1)])
def test_fused_step_equals_torch_steps_fp32(monkeypatch, T, B, D, H):
    """Odd sizes exercise the vector loops' remainders; outputs and every gradient agree."""
    x, params, gout = _layer(T, B, D, H)
    h_t, g_t = _run(monkeypatch, x, params, gout, kernel=False)
    h_k, g_k = _run(monkeypatch, x, params, gout, kernel=True)
    torch.testing.assert_close(h_k, h_t, rtol=1e-5, atol=1e-6)
    for name, a, b in zip(("x", "w_ih", "w_hh", "bias", "peep"), g_k, g_t):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_fused_step_equals_torch_steps_under_bf16_autocast(monkeypatch):
    """Short rows, so bf16 rounding of h (fed back every step) cannot drift the paths apart."""
    x, params, gout = _layer(4, 8, 16, 12, seed=1)
    h_t, g_t = _run(monkeypatch, x, params, gout, kernel=False, autocast=True)
    h_k, g_k = _run(monkeypatch, x, params, gout, kernel=True, autocast=True)
    torch.testing.assert_close(h_k, h_t, rtol=2e-2, atol=2e-3)
    for a, b in zip(g_k, g_t):
        assert float((a - b).abs().max()) <= 2e-2 * float(b.abs().max())


def test_classifier_step_equal_with_and_without_the_fused_step(monkeypatch):
    """Through the batch-first model: the incoming gradient is a transposed (strided) view,
    which the C step reads in place."""
    def grads(kernel: bool):
        monkeypatch.setenv(peephole_kernel.ENV, "1" if kernel else "0")
        torch.manual_seed(0)
        model = LSTMClassifier(vocab_size=50, num_classes=3, embed_dim=8, hidden_size=6,
                               cell="peephole", dropout=0.0)
        ids = torch.randint(2, 50, (5, 9))
        lengths = torch.tensor([9, 7, 9, 3, 1])
        loss = model.loss(model(ids, lengths), torch.tensor([0, 1, 2, 1, 0]))
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    (loss_t, g_t), (loss_k, g_k) = grads(False), grads(True)
    torch.testing.assert_close(loss_k, loss_t)
    for name in g_t:
        torch.testing.assert_close(g_k[name], g_t[name], rtol=1e-4, atol=1e-6, msg=name)


def test_fused_step_propagates_nan_like_torch(monkeypatch):
    x, params, gout = _layer(5, 2, 3, 4)
    with torch.no_grad():
        x[2, 1, 0] = float("nan")
    h_t, _ = _run(monkeypatch, x, params, gout, kernel=False)
    h_k, _ = _run(monkeypatch, x, params, gout, kernel=True)
    assert h_t.isnan().any()
    assert torch.equal(h_k.isnan(), h_t.isnan())


def test_loading_the_kernel_leaves_denormals_alone():
    """Linking with -ffast-math would add gcc's crtfastmath.o, which switches the whole process
    to flush denormals when the library loads (overriding train.flush_denormal)."""
    code = ("import torch; torch.set_flush_denormal(False)\n"
            "from sparklstm.nn.peephole_kernel import step_kernel\n"
            "assert step_kernel() is not None\n"
            "print(float(torch.tensor([1e-39]) * 1.0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, peephole_kernel.ENV: "1"})
    assert float(out.stdout.split()[-1]) > 0.0


def test_env_switch_and_a_failed_build_fall_back_to_torch_steps(monkeypatch):
    monkeypatch.setenv(peephole_kernel.ENV, "0")
    assert peephole_kernel.step_kernel() is None
    monkeypatch.setenv(peephole_kernel.ENV, "1")
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setitem(peephole_kernel._state, "tried", False)
    monkeypatch.setitem(peephole_kernel._state, "lib", None)
    with pytest.warns(UserWarning, match="fused step not built"):
        assert peephole_kernel.step_kernel() is None
    x, params, gout = _layer(3, 2, 3, 4)
    h, grads = _run(monkeypatch, x, params, gout, kernel=True)  # the torch steps, quietly
    assert h.shape == (3, 2, 4) and all(g is not None for g in grads)
