"""The peephole LSTM layer, fast: one matmul for every step's input projection, a lean
recurrence, and a hand-written backward through time.

Design (measured on the 2-core CPU, batch 64, hidden 128; ``bench/peephole.py``):

* A custom ``torch.autograd.Function`` per layer. The Python loop through autograd (the seed's
  implementation, kept as :func:`peephole_reference`) records ~12 graph nodes a step and its
  backward walks them one by one; ``torch.jit.script`` of that loop is deprecated in torch 2.13
  and measured about as fast as the plain loop (no CPU fuser).
* Forward: the input projections of all steps are one matmul into a (T, B, 4H) buffer (the bias
  is added per step); each step is one ``addmm`` for the recurrent part plus ~17 small in-place
  / ``out=`` kernels, no allocations. While a step's values are in cache it also writes the step-local derivatives
  the backward needs (J, K, R below) -- into the buffer slot of the projection it just consumed,
  so training keeps one (T, B, 4H) buffer and four (T, B, H) ones per layer. On this VM each
  freshly touched MB costs ~0.6 ms of page faults, so memory written is time.
* Backward: per step one ``addmm`` (dh_{t-1} = grad_h + dA_t W_hh) and six small kernels that
  turn J into dA (in place, unless the graph is retained for another backward); after the loop
  the weight and input gradients are single matmuls over all steps:
  ``dW_hh = Σ_t dA_tᵀ h_{t-1}``, ``dW_ih = dAᵀ x``, ``dx = dA W_ih``.
* tanh is computed as ``2σ(2z) - 1``: on this CPU one sigmoid over all four gates is several
  times cheaper than tanh. The g rows of the weights are doubled outside the Function (an
  autograd op on the small weight tensors, so its gradient is handled by autograd).
* Gates are kept internally in the order (o, i, f, g): the three peephole gates are contiguous
  (one kernel adds all three peepholes) and the backward's dA is two kernels (o from dh; i, f, g
  from dc). The parameters keep ``nn.LSTM``'s order (i, f, g, o); the permutation is an index on
  the weights and autograd scatters the gradients back.
* Training on CPU in float32 state (fp32 or bf16 autocast): when the fused C step builds
  (``peephole_kernel.py``, ``peephole_step.c``), each step's element-wise work -- the ~17
  forward kernels above, or the backward's six plus the bias gradient and the bf16 copy of dA
  -- is one C call on the same buffers, and only the matmuls stay torch ops. Those small kernels
  were about half of a bf16 training step. Elsewhere (no compiler, float64, CUDA, inference,
  a retained graph) the torch-kernel steps below run; tests check the two paths agree.

Autocast (training's precision=bf16, the scorer's bf16): the matmuls -- the all-steps input
projection, the per-step recurrent matmul and the backward's -- run in the autocast dtype, as
autocast would run them; the cell state, the gates' element-wise work and J, K, R stay in the
input's dtype (fp32). Without autocast everything is in the input's dtype. Device-agnostic (no
CPU-only ops).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .peephole_kernel import step_kernel

__all__ = ["gate_permutation", "peephole_layer_time_major", "peephole_reference"]

_PERMS: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
_PEEP_ROWS = [2, 0, 1]  # weight_peep rows (W_ci, W_cf, W_co) -> internal (W_co, W_ci, W_cf)


def gate_permutation(hidden_size: int, device: torch.device):
    """(rows, scale): ``W[rows] * scale[:, None]`` takes nn.LSTM's stacked gates (i, f, g, o)
    to the internal order (o, i, f, g) with the g rows doubled (tanh(z) = 2σ(2z) - 1)."""
    key = (hidden_size, str(device))
    if key not in _PERMS:
        H = hidden_size
        with torch.inference_mode(False):  # cached: must also serve autograd later
            rows = torch.cat([torch.arange(3 * H, 4 * H), torch.arange(0, 2 * H),
                              torch.arange(2 * H, 3 * H)])
            scale = torch.ones(4 * H)
            scale[3 * H:] = 2.0
            _PERMS[key] = rows.to(device), scale.to(device)
    return _PERMS[key]


def _internal_params(weight_ih, weight_hh, bias, weight_peep):
    """nn.LSTM-order parameters -> internal order (o, i, f, 2g); differentiable."""
    rows, scale = gate_permutation(weight_hh.shape[1], weight_hh.device)
    scale = scale.to(weight_hh.dtype).unsqueeze(1)
    return (weight_ih[rows] * scale, weight_hh[rows] * scale, bias[rows] * scale[:, 0],
            weight_peep[_PEEP_ROWS])


class _StepMatmul:
    """a = xp_t + b + h_{t-1} W_hhᵀ for one step, in x's dtype or, under autocast, with the
    matmul in ``mm_dtype`` (bf16/fp16; h is kept in that dtype too) and the sum in x's dtype."""

    def __init__(self, w_hh, b, mm_dtype, B: int):
        self.b = b
        self.mixed = mm_dtype != w_hh.dtype
        if self.mixed:
            self.w_t = w_hh.to(mm_dtype).t()
            self.h_mm = w_hh.new_zeros(B, w_hh.shape[1], dtype=mm_dtype)  # h_{t-1}, mm dtype
            self.hw = w_hh.new_empty(B, w_hh.shape[0], dtype=mm_dtype)
        else:
            self.w_t = w_hh.t()

    def __call__(self, a, xp_t, h_prev):
        if self.mixed:
            torch.mm(self.h_mm, self.w_t, out=self.hw)
            torch.add(xp_t, self.b, out=a).add_(self.hw)
        else:
            torch.add(xp_t, self.b, out=a).addmm_(h_prev, self.w_t)

    def new_h(self, h_t):
        if self.mixed:
            self.h_mm.copy_(h_t)


def _recurrence(xp, w_hh, b, w_peep, mm_dtype, J=None):
    """Run the steps over the input projections ``xp`` (T, B, 4H), without bias, in the
    internal gate order (o, i, f, 2 z_g). Per step, with a = the pre-activations::

        a = xp_t + b + h_{t-1} W_hhᵀ;  a[o, i, f] += W_c{o,i,f} ∘ c_{t-1};  s = σ(a)
        g = 2 s_g - 1 (= tanh z_g);  c_t = s_f ∘ c_{t-1} + s_i ∘ g
        tanh(c_t) = 2σ(2 c_t) - 1;   h_t = s_o ∘ tanh(c_t)

    The state and the element-wise work are in ``b``'s dtype; xp and the recurrent matmul may
    be in ``mm_dtype`` (autocast). Returns h (T+1, B, H) with h[0] = 0 and h[t+1] the output of
    step t. For training pass ``J`` (T, B, 4H) (it may be ``xp`` itself: step t reads xp_t
    before it writes J_t); then also returns c (T+1, B, H) with c[0] = 0, and K, R (T, B, H)::

        J = (J_o, J_i, J_f, J_g) = ∂(h_t, c_t, c_t, c_t)/∂a (diagonal):
            J_o = s_o (1 - s_o) tanh c_t,  J_i = s_i (1 - s_i) g,
            J_f = s_f (1 - s_f) c_{t-1},   J_g = 2 s_i s_g (1 - s_g)
        K = ∂h_t/∂c_t = s_o (1 - tanh² c_t)
        R = ∂c_{t+1}/∂c_t without the o peephole = s_f + J_i ∘ W_ci + J_f ∘ W_cf
    """
    T, B, H4 = xp.shape
    H = H4 // 4
    H2, H3 = 2 * H, 3 * H
    train = J is not None
    new = b.new_empty
    step_mm = _StepMatmul(w_hh, b, mm_dtype, B)
    peep = w_peep.unsqueeze(0)  # (1, 3, H), broadcast over the batch
    w_ci, w_cf = w_peep[1], w_peep[2]
    minus_one = b.new_full((B, H), -1.0)
    a = new(B, H4)  # this step's activations (s_o, s_i, s_f, g)
    a3 = a.view(B, 4, H)[:, :3]
    s_o, s_i, s_f, g = a[:, :H], a[:, H:H2], a[:, H2:H3], a[:, H3:]
    tc = new(B, H)  # tanh(c_t)
    h = new(T + 1, B, H)
    h[0].zero_()
    c = new(T + 1 if train else 2, B, H)  # rolling when not training
    c[0].zero_()
    hs, cs, cs1 = h.unbind(0), c.unbind(0), c.unsqueeze(2).unbind(0)  # views made once
    xps = xp.unbind(0)
    if not train:
        for t in range(T):
            c_prev, c_next = cs[t % 2], cs[(t + 1) % 2]
            step_mm(a, xps[t], hs[t])
            a3.addcmul_(cs1[t % 2], peep)  # + W_c{o,i,f} ∘ c_{t-1}
            a.sigmoid_()
            torch.add(minus_one, g, alpha=2, out=g)  # g = 2σ(2 z_g) - 1 = tanh(z_g)
            torch.mul(s_f, c_prev, out=c_next)
            c_next.addcmul_(s_i, g)  # c_t = f ∘ c_{t-1} + i ∘ g
            torch.add(c_next, c_next, out=tc)
            tc.sigmoid_()
            torch.add(minus_one, tc, alpha=2, out=tc)  # tanh(c_t)
            torch.mul(s_o, tc, out=hs[t + 1])  # h_t = o ∘ tanh(c_t)
            step_mm.new_h(hs[t + 1])
        return h

    K = new(T, B, H)
    R = new(T, B, H)
    lib = _kernel_for(b, mm_dtype)
    if lib is not None:  # each step's element-wise work in one C call (peephole_step.c)
        hw = step_mm.hw if step_mm.mixed else new(B, H4)  # h_{t-1} W_hhᵀ, the mm's dtype
        h_mm = step_mm.h_mm if step_mm.mixed else None
        # The C code gets raw addresses: keep every tensor it reads referenced and contiguous.
        bias, peep_c, scratch = b.contiguous(), w_peep.contiguous(), new(H4)
        xp_bf16, hw_bf16 = int(xp.dtype == torch.bfloat16), int(hw.dtype == torch.bfloat16)
        step_xp, step_bh = B * H4 * xp.element_size(), B * H * 4  # bytes per step
        xp0, J0, K0, R0, c0, h0 = (x.data_ptr() for x in (xp, J, K, R, c, h))
        b_p, hw_p, peep_p, scratch_p = (x.data_ptr() for x in (bias, hw, peep_c, scratch))
        h_mm_p = None if h_mm is None else h_mm.data_ptr()
        fwd = lib.peephole_forward_step
        for t in range(T):
            torch.mm(hs[t] if h_mm is None else h_mm, step_mm.w_t, out=hw)
            fwd(B, H, xp0 + t * step_xp, xp_bf16, b_p, hw_p, hw_bf16, c0 + t * step_bh, peep_p,
                J0 + 4 * t * B * H4, K0 + t * step_bh, R0 + t * step_bh, c0 + (t + 1) * step_bh,
                h0 + (t + 1) * step_bh, h_mm_p, scratch_p)
        return h, c, K, R
    zero = b.new_zeros(B, H)
    J4 = J.view(T, B, 4, H)
    J_os, J_is, J_fs, J_gs = (J4[:, :, k].unbind(0) for k in range(4))
    for t, (J_t, J_o, J_i, J_f, J_g, K_t, R_t) in enumerate(zip(
            J.unbind(0), J_os, J_is, J_fs, J_gs, K.unbind(0), R.unbind(0))):
        c_prev, c_next, h_next = cs[t], cs[t + 1], hs[t + 1]
        step_mm(a, xps[t], hs[t])
        a3.addcmul_(cs1[t], peep)  # + W_c{o,i,f} ∘ c_{t-1}
        a.sigmoid_()
        torch.addcmul(a, a, a, value=-1, out=J_t)  # σ' of all four gates
        torch.add(minus_one, g, alpha=2, out=g)  # g = 2σ(2 z_g) - 1 = tanh(z_g)
        torch.mul(s_f, c_prev, out=c_next)
        c_next.addcmul_(s_i, g)  # c_t = f ∘ c_{t-1} + i ∘ g
        torch.add(c_next, c_next, out=tc)
        tc.sigmoid_()
        torch.add(minus_one, tc, alpha=2, out=tc)  # tanh(c_t)
        torch.mul(s_o, tc, out=h_next)  # h_t = o ∘ tanh(c_t)
        step_mm.new_h(h_next)
        J_o.mul_(tc)
        J_i.mul_(g)
        J_f.mul_(c_prev)
        torch.addcmul(zero, J_g, s_i, value=2, out=J_g)
        torch.addcmul(s_o, h_next, tc, value=-1, out=K_t)
        torch.addcmul(s_f, J_i, w_ci, out=R_t)
        R_t.addcmul_(J_f, w_cf)
    return h, c, K, R


def _bptt(grad_h, J, dA, w_hh, w_peep, c, K, R, mm_dtype):
    """Backward through time: writes dA = dL/da (T, B, 4H) from J and returns the peephole
    gradient (3, H), then -- from the fused C steps only, else None -- dA in the matmul dtype
    (T, B, 4H; None in fp32) and the bias gradient (4H,). ``dA`` may be ``J`` itself (each J_t
    is read before dA_t is written).
    The recurrent matmul runs in ``mm_dtype`` (the forward's). Per step, going back::

        dh_t = grad_h[t] + dA_{t+1} W_hh
        dc_t = dc_{t+1} ∘ R_{t+1} + dA_o,{t+1} ∘ W_co + dh_t ∘ K_t
        dA_o = dh_t ∘ J_o;  dA_{i,f,g} = dc_t ∘ J_{i,f,g};
        dW_c{o,i,f} += dA_{o,i,f} ∘ c_{t-1}
    """
    T, B, H4 = J.shape
    H = H4 // 4
    w_co = w_peep[0]
    mixed = mm_dtype != dA.dtype
    if mixed:  # dA_{t+1} and W_hh in the matmul dtype
        w_mm = w_hh.to(mm_dtype)
        dA_mm = dA.new_empty(B, H4, dtype=mm_dtype)
        dh_mm = dA.new_empty(B, H, dtype=mm_dtype)
    dh, dh_next = grad_h.new_empty(B, H), grad_h.new_empty(B, H)
    dc, dc_next = grad_h.new_empty(B, H), grad_h.new_empty(B, H)
    gp = grad_h.new_zeros(B, 3, H)
    lib = _kernel_for(dA, mm_dtype) if dA is J else None  # in place: the training path
    if lib is not None:  # each step's element-wise work in one C call (peephole_step.c)
        # The C code gets raw addresses: keep every tensor it reads referenced and contiguous
        # (grad_h's rows may be strided: it is usually a transposed view).
        if grad_h.stride(2) != 1:
            grad_h = grad_h.contiguous()
        w_co, K, R, c = (x.contiguous() for x in (w_co, K, R, c))
        dh_mm = dh_mm if mixed else dh  # dA_{t+1} W_hh, the mm's dtype
        # Under autocast the C code writes each dA_t in the matmul dtype too, into a (T, B, 4H)
        # buffer that the next step's matmul and the all-steps matmuls after the loop read.
        dA_low = J.new_empty(T, B, H4, dtype=mm_dtype) if mixed else None
        w_step, dh_bf16 = (w_mm if mixed else w_hh), int(mixed and mm_dtype == torch.bfloat16)
        step_bh, step_b4 = B * H * 4, B * H4 * 4  # bytes per step
        step_g = grad_h.stride(0) * 4
        lows = (dA_low if mixed else dA).unbind(0)  # what each step's matmul reads
        gb = J.new_zeros(B, H4)  # the bias gradient per row, summed over steps by the C code
        scratch = J.new_empty(H)
        g0, K0, R0, c0, J0 = (x.data_ptr() for x in (grad_h, K, R, c, J))
        dh_p, w_co_p, gp_p, gb_p, scratch_p = (
            x.data_ptr() for x in (dh_mm, w_co, gp, gb, scratch))
        g_row, bwd = grad_h.stride(1), lib.peephole_backward_step
        for t in range(T - 1, -1, -1):
            last = t == T - 1
            if not last:
                torch.mm(lows[t + 1], w_step, out=dh_mm)
            bwd(B, H, g0 + t * step_g, g_row, None if last else dh_p, dh_bf16,
                None if last else dc_next.data_ptr(), None if last else R0 + (t + 1) * step_bh,
                None if last else J0 + (t + 1) * step_b4, w_co_p, K0 + t * step_bh,
                c0 + t * step_bh, J0 + t * step_b4, gp_p, gb_p, dc.data_ptr(),
                lows[t].data_ptr() if mixed else None, scratch_p)
            dc, dc_next = dc_next, dc
        return gp.sum(0), dA_low, gb.sum(0)
    J4, dA4 = J.view(T, B, 4, H), dA.view(T, B, 4, H)
    J_os, J_ifgs = J4[:, :, 0].unbind(0), J4[:, :, 1:].unbind(0)
    dAs, dA_os, dA_ifgs = dA.unbind(0), dA4[:, :, 0].unbind(0), dA4[:, :, 1:].unbind(0)
    dA_ofis, cs1 = dA4[:, :, :3].unbind(0), c.unsqueeze(2).unbind(0)
    grad_hs, Ks, Rs = grad_h.unbind(0), K.unbind(0), R.unbind(0)
    for t in range(T - 1, -1, -1):
        if t == T - 1:
            dh.copy_(grad_hs[t])
            torch.mul(dh, Ks[t], out=dc)
        else:
            if mixed:
                torch.mm(dA_mm, w_mm, out=dh_mm)
                torch.add(grad_hs[t], dh_mm, out=dh)
            else:
                torch.addmm(grad_hs[t], dAs[t + 1], w_hh, out=dh)
            torch.mul(dc_next, Rs[t + 1], out=dc)
            dc.addcmul_(dA_os[t + 1], w_co)
            dc.addcmul_(dh, Ks[t])
        torch.mul(J_os[t], dh, out=dA_os[t])  # dA_o
        torch.mul(J_ifgs[t], dc.unsqueeze(1), out=dA_ifgs[t])  # dA_i, dA_f, dA_g
        gp.addcmul_(dA_ofis[t], cs1[t])
        if mixed:
            dA_mm.copy_(dAs[t])
        dh, dh_next = dh_next, dh
        dc, dc_next = dc_next, dc
    return gp.sum(0), None, None


def _kernel_for(t: torch.Tensor, mm_dtype: torch.dtype):
    """The fused step library when it applies (float32 state on CPU, fp32 or bf16 matmuls)."""
    if t.device.type != "cpu" or t.dtype != torch.float32:
        return None
    if mm_dtype not in (torch.float32, torch.bfloat16):
        return None
    return step_kernel()


def _matmul_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run x's matmuls in: its autocast dtype (bf16/fp16, narrower
    than fp32) when autocast is on for x's device and x is float32, else x's dtype."""
    try:
        if x.dtype == torch.float32 and torch.is_autocast_enabled(x.device.type):
            return torch.get_autocast_dtype(x.device.type)
    except Exception:  # a device type autocast does not know
        pass
    return x.dtype


def _autocast_off(device_type: str):
    """A context that switches autocast off for ``device_type`` if it is on (else a no-op)."""
    try:
        on = torch.is_autocast_enabled(device_type)
    except Exception:  # a device type autocast does not know
        on = False
    return torch.autocast(device_type=device_type, enabled=False) if on else nullcontext()


def _graph_is_freed_after_this_backward() -> bool:
    """True when the running backward releases the graph's saved tensors afterwards
    (``retain_graph=False``); False when unsure."""
    try:
        return not torch._C._autograd._get_current_graph_task_keep_graph()
    except Exception:  # a private API: if it moves or fails, take the always-safe path
        return False


class _PeepholeLayer(torch.autograd.Function):
    """(T, B, D) -> (T, B, H) for internal-order parameters, see :func:`_recurrence`."""

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b, w_peep, mm_dtype):
        T, B, D = x.shape
        H4 = w_ih.shape[0]
        x2 = x.reshape(T * B, D)
        # The input projections of all steps: one matmul (the bias is added per step, which is
        # cheaper than addmm's copy of the broadcast bias into a (T, B, 4H) output).
        if mm_dtype == x.dtype:  # J_t overwrites xp_t once step t has read it
            buf = xp = x2.mm(w_ih.t()).view(T, B, H4)
        else:  # autocast: the matmuls in bf16/fp16, the recurrence in x's dtype
            x2 = x2.to(mm_dtype)
            buf = x.new_empty(T, B, H4)
            # xp (narrower) lives in the tail of buf's memory: J_t then only overwrites the
            # projections of steps <= t, already read -- one buffer, as in fp32.
            xp = buf.view(-1).view(mm_dtype)[-T * B * H4:].view(T, B, H4)
            torch.mm(x2, w_ih.to(mm_dtype).t(), out=xp.view(T * B, H4))
        h, c, K, R = _recurrence(xp, w_hh, b, w_peep, mm_dtype, J=buf)
        ctx.mm_dtype = mm_dtype
        ctx.save_for_backward(x2, w_ih, w_hh, w_peep, buf, h, c, K, R)
        return h[1:]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h):
        x2, w_ih, w_hh, w_peep, buf, h, c, K, R = ctx.saved_tensors
        T, B, H4 = buf.shape
        with _autocast_off(grad_h.device.type):
            # dA may overwrite J unless the graph is kept for another backward (gradcheck,
            # retain_graph=True): a fresh 4H-wide buffer costs page faults on CPU.
            dA = buf if _graph_is_freed_after_this_backward() else torch.empty_like(buf)
            grad_peep, dA_low, grad_b = _bptt(grad_h, buf, dA, w_hh, w_peep, c, K, R,
                                              ctx.mm_dtype)
            dA = dA.view(T * B, H4)
            needs = ctx.needs_input_grad
            if grad_b is None:  # the C steps sum it on the way
                grad_b = dA.sum(0) if needs[3] else None
            # The all-steps matmuls run in the forward's matmul dtype (x2 is saved in it).
            dtype, mm = w_ih.dtype, ctx.mm_dtype
            dA = dA.to(mm) if dA_low is None else dA_low.view(T * B, H4)
            grad_x = dA.mm(w_ih.to(mm)).view(T, B, w_ih.shape[1]).to(dtype) if needs[0] else None
            grad_w_ih = dA.t().mm(x2).to(dtype) if needs[1] else None
            grad_w_hh = (dA.t().mm(h[:-1].reshape(T * B, w_hh.shape[1]).to(mm)).to(dtype)
                         if needs[2] else None)
        return grad_x, grad_w_ih, grad_w_hh, grad_b, grad_peep if needs[4] else None, None


def peephole_layer_time_major(x: torch.Tensor, weight_ih, weight_hh, bias, weight_peep):
    """One peephole layer on time-major input (T, B, D) -> (T, B, H), h_0 = c_0 = 0.

    Parameters in nn.LSTM's gate order (i, f, g, o), ``weight_peep`` rows (W_ci, W_cf, W_co).
    Differentiable (hand-written backward through time) when grad mode is on and anything
    requires grad; otherwise a plain loop with rolling buffers.
    """
    w_ih, w_hh, b, peep = _internal_params(weight_ih, weight_hh, bias, weight_peep)
    dtype, device_type = x.dtype, x.device.type
    if torch.is_grad_enabled() and any(
        t.requires_grad for t in (x, weight_ih, weight_hh, bias, weight_peep)
    ):
        mm_dtype = _matmul_dtype(x)
        with _autocast_off(device_type):
            return _PeepholeLayer.apply(x, w_ih.to(dtype), w_hh.to(dtype), b.to(dtype),
                                        peep.to(dtype), mm_dtype)
    with torch.no_grad():
        # Under autocast the matmuls run in the autocast dtype (bf16 on CPU), the rest in x's.
        mm_dtype = _matmul_dtype(x)
        xp = F.linear(x.to(mm_dtype), w_ih.to(mm_dtype)).contiguous()
        with _autocast_off(device_type):
            return _recurrence(xp, w_hh.to(dtype), b.to(dtype), peep.to(dtype), mm_dtype)[1:]


def peephole_reference(x: torch.Tensor, weight_ih, weight_hh, bias, weight_peep) -> torch.Tensor:
    """The seed's equations as a plain loop through autograd (the original implementation),
    batch-first (B, T, D) -> (B, T, H); kept as the reference for tests and ``bench/peephole.py``.
    """
    B, T, _ = x.shape
    H = weight_hh.shape[1]
    x_proj = F.linear(x, weight_ih, bias)  # (B, T, 4H)
    w_ci, w_cf, w_co = weight_peep
    h = x.new_zeros(B, H)
    c = x.new_zeros(B, H)
    outputs = []
    for t in range(T):
        gates = torch.addmm(x_proj[:, t], h, weight_hh.t())
        i, f, g, o = gates.chunk(4, dim=1)
        i = torch.sigmoid(i + w_ci * c)
        f = torch.sigmoid(f + w_cf * c)
        o = torch.sigmoid(o + w_co * c)  # reads c_{t-1}
        c = f * c + i * torch.tanh(g)
        h = o * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs, dim=1)
