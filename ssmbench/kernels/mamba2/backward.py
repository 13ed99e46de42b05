"""Hand-written SSD backward: every gradient from batched GEMMs over chunks, no autograd graph of the forward.

Autograd through the chunked forward records ~40 small ops per block and keeps their outputs; its backward then
re-walks them (and the block loop's slice writes copy the whole output gradient per block), so training ran 3x
slower than the paper's ``ssd_minimal`` at L=16k. Here the forward (the compiled C++ recurrence, or the chunked
PyTorch blocks) saves only its inputs and the state at the start of every chunk, S_prev (b, K, h, n, p); the
backward walks the blocks from last to first carrying dS, the gradient of the state, and per block of K chunks
(glossary of ``reference.py``; per head a = dt·A, cum_i = a_1 + … + a_i within a chunk, u_j = dt_j x_j):

    y_i = Σ_{j≤i} exp(cum_i − cum_j) (C_i·B_j) u_j  +  exp(cum_i) S_prev C_i        (diagonal + off-diagonal)
    S_end = exp(cum_Q) S_prev + Σ_j exp(cum_Q − cum_j) dt_j x_j B_jᵀ

1. dS at the end of each chunk: dS_prev[k] = exp(cum_Q[k]) dS_end[k] + Σ_i exp(cum_i) dy_i C_iᵀ, a reverse
   recurrence over the block's chunks of one fused elementwise op each (the Σ_i is one GEMM for all chunks);
2. from the chunk states: d(w x) = B dS_end, dB += (w x)·dS_endᵀ, with w_j = exp(cum_Q − cum_j) dt_j;
3. from the off-diagonal output: E = (exp(cum) dy) S_prevᵀ per head gives dC (summed over the group's heads) and
   d cum_i = Σ_n E_in C_in;
4. from the diagonal blocks (M = decay ∘ C Bᵀ, y = M u): du = Mᵀ dy, dM = dy uᵀ, d(C Bᵀ) = Σ_heads dM ∘ decay
   (→ dC, dB), d seg = dM ∘ M (→ d cum by row and column sums: seg_ij = cum_i − cum_j);
5. d cum → d a by a reverse cumulative sum → d dt and dA.

Everything runs in the compute dtype (float32, or float64 for the oracle tests). Memory: the saved inputs, S_prev
(x's size times n / Q) and one block's intermediates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ssmbench.kernels.mamba2.reference import apply_skip_and_gate, compute_dtype, process_dt, stable_segsum

# Tokens per backward block (whole chunks). Larger than the forward's: each block runs ~50 ops whose Python cost
# must stay small next to its GEMMs, and one block's Q x Q intermediates (6 of b·h·T·Q floats) stay in L2/L3.
BWD_BLOCK_TOKENS = 1024


def _store(dst: torch.Tensor, src: torch.Tensor) -> None:
    """dst (b, T, ...) <- src (b, K, Q, ...), a permuted view of a block result, in one copy (T <= K·Q)."""
    b, K, Q = src.shape[:3]
    if dst.shape[1] == K * Q:
        dst.view(src.shape).copy_(src)
    else:
        dst.copy_(src.reshape(b, K * Q, *dst.shape[2:])[:, :dst.shape[1]])


def _bwd_block(x, dt, A, B, C, D, s_prev, dy, G, chunk: int, out: tuple):
    """One block of whole chunks (the last may be short). x, dy: (b, T, h, p); dt: (b, T, h); A: (h,);
    B, C: (b, T, g, n); D: (h, p) or None; s_prev: (b, K, h, n, p) states entering each chunk; G: (b, g, r, n, p), the
    gradient of the state leaving the block. Writes dx, ddt, dB, dC into ``out`` (slices of the full gradients) and
    returns dA (h,), dD (h, p) or None, and the gradient of the state entering the block."""
    b, T, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    r, Q = h // g, chunk
    K = math.ceil(T / Q)
    pad = K * Q - T
    if pad:  # dt = 0 on the padding: identity steps, zero gradients there
        x, dy, B, C = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x, dy, B, C))
        dt = F.pad(dt, (0, 0, 0, pad))
    xh = x.view(b, K, Q, g, r, p).permute(0, 3, 1, 4, 2, 5).contiguous()  # (b, g, K, r, Q, p): per-head GEMMs
    dyh = dy.view(b, K, Q, g, r, p).permute(0, 3, 1, 4, 2, 5).contiguous()
    dt5 = dt.view(b, K, Q, g, r).permute(0, 3, 1, 4, 2).contiguous()  # (b, g, K, r, Q)
    Bc = B.view(b, K, Q, g, n).permute(0, 3, 1, 2, 4)  # (b, g, K, Q, n)
    Cc = C.view(b, K, Q, g, n).permute(0, 3, 1, 2, 4)
    sp = s_prev.view(b, K, g, r, n, p).transpose(1, 2)  # (b, g, K, r, n, p)
    a = dt5 * A.view(g, r)[None, :, None, :, None]
    cum = a.cumsum(-1)
    decay = stable_segsum(a).exp_()  # (b, g, K, r, Q, Q); 1 above the diagonal, masked by CB's triangle
    CB = (Cc @ Bc.transpose(-1, -2)).tril_()[:, :, :, None]  # (b, g, K, 1, Q, Q)

    # 1. dS at the end of every chunk (reverse recurrence; T_k = Σ_i exp(cum_i) C_i dy_iᵀ, one GEMM for all k).
    dys = dyh * cum.exp()[..., None]  # (b, g, K, r, Q, p)
    Tk = Cc.transpose(-1, -2)[:, :, :, None] @ dys  # (b, g, K, r, n, p)
    chunk_decay = cum[..., -1].exp()  # (b, g, K, r)
    G_end = torch.empty_like(Tk)
    for k in range(K - 1, -1, -1):
        G_end[:, :, k] = G
        G = torch.addcmul(Tk[:, :, k], G, chunk_decay[:, :, k, :, None, None])
    del Tk
    dcum_last = (G_end * sp).sum((-1, -2)) * chunk_decay  # via S_end = exp(cum_Q) S_prev + ...

    # 2. chunk states: w_j = exp(cum_Q − cum_j) dt_j is the decay matrix's last row times dt.
    w_decay = decay[..., -1, :]  # (b, g, K, r, Q)
    w = w_decay * dt5
    dwx = Bc[:, :, :, None] @ G_end  # (b, g, K, r, Q, p)
    dB = ((xh * w[..., None]) @ G_end.transpose(-1, -2)).sum(3)  # (b, g, K, Q, n)
    dw = (dwx * xh).sum(-1)  # (b, g, K, r, Q)
    del G_end

    # 3. off-diagonal output y_off = exp(cum_i) S_prev C_i.
    E = dys @ sp.transpose(-1, -2)  # (b, g, K, r, Q, n)
    dC = E.sum(3)
    dcum = (E * Cc[:, :, :, None]).sum(-1)
    del E, dys

    # 4. diagonal blocks: y = M (dt x), M = decay ∘ CB (lower triangle).
    xdt = xh * dt5[..., None]
    dxdt = (decay * CB).transpose(-1, -2) @ dyh
    dMd = (dyh @ xdt.transpose(-1, -2)).mul_(decay)  # dM ∘ decay (junk above the diagonal)
    del xdt, decay
    dCB = dMd.sum(3).tril_()  # (b, g, K, Q, Q)
    dC += dCB @ Bc
    dB += dCB.transpose(-1, -2) @ Cc
    dseg = dMd.mul_(CB)  # dM ∘ M, zero above the diagonal
    dcum += dseg.sum(-1) - dseg.sum(-2)
    del dseg, dMd

    # 5. w's dependence on cum and dt; d cum -> d a (reverse cumsum) -> d dt, dA.
    dww = dw * w
    dcum -= dww
    dcum[..., -1] += dcum_last + dww.sum(-1)
    da = dcum.flip(-1).cumsum(-1).flip(-1)
    ddt = da * A.view(g, r)[None, :, None, :, None] + dw * w_decay + (xh * dxdt).sum(-1)
    dA = (da * dt5).sum((0, 2, 4)).reshape(h)
    dx = dxdt.mul_(dt5[..., None]).add_(dwx.mul_(w[..., None]))
    dD = None
    if D is not None:  # y += D ⊙ x
        Dv = D.view(g, r, p)[None, :, None, :, None, :]
        dx.addcmul_(dyh, Dv)
        dD = (dyh * xh).sum((0, 2, 4)).reshape(h, p)

    dx_out, ddt_out, dB_out, dC_out = out
    _store(dx_out, dx.permute(0, 2, 4, 1, 3, 5))
    _store(ddt_out, ddt.permute(0, 2, 4, 1, 3))
    _store(dB_out, dB.permute(0, 2, 3, 1, 4))
    _store(dC_out, dC.permute(0, 2, 3, 1, 4))
    return dA, dD, G


def ssd_backward(x, dt, A, B, C, D, s_prev, dy, dfinal, chunk: int):
    """Gradients of the core SSD with the D skip (z, dt_bias and softplus: callers differentiate those with autograd).

    x, dy: (b, l, h, p); dt: (b, l, h) processed; A: (h,); B, C: (b, l, g, n); D: (h,), (h, p) or None;
    s_prev: (b, ceil(l / chunk), h, n, p) the state entering every chunk; dfinal: (b, h, p, n) or None.
    Returns dx, ddt, dA, dB, dC, dD (None without D), d initial_states.
    """
    b, length, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    r = h // g
    dx, ddt = torch.empty_like(x), torch.empty_like(dt)
    dB, dC = torch.empty_like(B), torch.empty_like(C)
    dA = torch.zeros_like(A)
    D2 = None if D is None else (D[:, None].expand(h, p) if D.dim() == 1 else D).contiguous()
    dD = None if D is None else x.new_zeros(h, p)
    G = (x.new_zeros(b, g, r, n, p) if dfinal is None
         else dfinal.to(x.dtype).reshape(b, g, r, p, n).transpose(-1, -2).contiguous())
    step = chunk * max(1, BWD_BLOCK_TOKENS // chunk)
    for t0 in reversed(range(0, length, step)):
        sl = slice(t0, min(t0 + step, length))
        ks = slice(t0 // chunk, math.ceil(sl.stop / chunk))
        dA_b, dD_b, G = _bwd_block(x[:, sl], dt[:, sl], A, B[:, sl], C[:, sl], D2, s_prev[:, ks], dy[:, sl], G,
                                   chunk, (dx[:, sl], ddt[:, sl], dB[:, sl], dC[:, sl]))
        dA += dA_b
        if dD is not None:
            dD += dD_b
    if dD is not None and D.dim() == 1:
        dD = dD.sum(-1)
    return dx, ddt, dA, dB, dC, dD, G.transpose(-1, -2).reshape(b, h, p, n)


class _SSDCore(torch.autograd.Function):
    """y, final = SSD core with the D skip on compute-dtype tensors (dt processed, no z), by ``forward_fn``.

    ``forward_fn(x, dt, A, B, C, D, S0, chunk) -> (y, final, s_prev)``, s_prev (b, ceil(l / chunk), h, n, p)."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, S0, chunk: int, forward_fn):
        y, final, s_prev = forward_fn(x, dt, A, B, C, D, S0, chunk)
        ctx.save_for_backward(x, dt, A, B, C, D, s_prev)
        ctx.chunk = chunk
        ctx.set_materialize_grads(False)
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        x, dt, A, B, C, D, s_prev = ctx.saved_tensors
        dy = torch.zeros_like(x) if dy is None else dy.to(x.dtype).contiguous()
        dx, ddt, dA, dB, dC, dD, dS0 = ssd_backward(x, dt, A, B, C, D, s_prev, dy, dfinal, ctx.chunk)
        return dx, ddt, dA, dB, dC, dD, (dS0 if ctx.needs_input_grad[6] else None), None, None


def ssd_trainable(forward_fn, x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False,
                  initial_states=None, return_final_states=False, core=None):
    """The SSD signature (``reference.ssd_ref``) with this module's backward; dt_bias / softplus and the z gate are
    plain autograd around the core op: ``core(x, dt, A, B, C, D, S0, chunk) -> (y, final)`` when given (the compiled
    backend's registered op under torch.compile), else :class:`_SSDCore` around ``forward_fn``."""
    ct = compute_dtype(x)
    xc = x.to(ct)
    dtc = process_dt(dt, dt_bias, dt_softplus, ct)
    S0 = None if initial_states is None else initial_states.to(ct).contiguous()
    Dc = None if D is None else D.to(ct).contiguous()
    args = (xc.contiguous(), dtc.contiguous(), A.to(ct).contiguous(), B.to(ct).contiguous(), C.to(ct).contiguous(),
            Dc, S0, int(chunk_size))
    y, final = _SSDCore.apply(*args, forward_fn) if core is None else core(*args)
    y = apply_skip_and_gate(y, xc, None, z).to(x.dtype)
    return (y, final) if return_final_states else y
