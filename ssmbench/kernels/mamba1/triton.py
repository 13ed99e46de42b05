"""Triton selective scan (GPU): chunked associative scan, forward and backward kernels.

Design (docs/kernels.md §2): grid (b, d / BLOCK_D); a program keeps its state h [BLOCK_D, N] in registers and
walks the length in tiles of BLOCK_T steps. Per tile it forms a = exp(dt·A) and dt·u·B as [BLOCK_T, BLOCK_D, N],
runs ``tl.associative_scan`` with the combine (a1, b1)∘(a2, b2) = (a1·a2, b1·a2 + b2) along time, adds the
carried state (h_t = b_t + a_t ⊙ h_carry), and emits y = <C_t, h_t> + D·u, gated by SiLU(z). Inputs are read
through their strides, so the time-major (b, l, d) views that ``nn.Linear`` produces load coalesced along d.
BLOCK_D divides d / g, so every program reads a single group of B and C.

Backward, per program and tile, newest tile first: recompute h_t and h_{t-1} from the state saved at the tile
entry (a (b, d, l/BLOCK_T, N) checkpoint from the forward), run the reverse scan
dL/dh_t = a_{t+1} ⊙ dL/dh_{t+1} + dy_t C_t with the gradient carried in from the next tile, then form every
input gradient. dB and dC are sums over channels: each program writes its block's partial sums to a
(b, d / BLOCK_D, n, l) buffer that is summed per group afterwards (deterministic, no atomics).

Tested on CPU with TRITON_INTERPRET=1 (tests/kernels/test_selective_scan.py); compute is float32 (float64 for
float64 inputs).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ssmbench.kernels.mamba1._common import as_groups, check_inputs, compute_dtype

BLOCK_T = 16  # time steps per tile; (BLOCK_D, BLOCK_T) = (16, 16) was the best prototype setting on H100


@triton.jit
def _combine(a1, b1, a2, b2):
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _delta(dt_ptrs, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, ACC: tl.constexpr):
    """dt = softplus(delta + bias) and d dt / d delta; masked entries get dt = 0 (state passes through)."""
    x = tl.load(dt_ptrs, mask=mask, other=0.0).to(ACC)
    if HAS_BIAS:
        x = x + bias[None, :]
    if SOFTPLUS:
        e = tl.exp(-tl.abs(x))
        one_e = 1.0 + e
        # log1p(e) = log(1 + e) · e / ((1 + e) - 1): exact-rounding correction (Goldberg), no libdevice log1p
        lp = tl.where(one_e == 1.0, e, tl.log(one_e) * e / (one_e - 1.0))
        dt = tl.where(x > 20.0, x, tl.maximum(x, 0.0) + lp)
        dsp = tl.where(x > 20.0, 1.0, tl.where(x >= 0.0, 1.0, e) / one_e)
    else:
        dt = x
        dsp = tl.full(x.shape, 1.0, ACC)
    return tl.where(mask, dt, 0.0), dsp


@triton.jit
def _fwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, last_ptr, ckpt_ptr,
                L, DCH, CPG, N, NTILES,
                su_b, su_d, su_l, sdt_b, sdt_d, sdt_l, sz_b, sz_d, sz_l, sy_b, sy_d, sy_l,
                sA_d, sA_n, sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
                NP: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr, ACC: tl.constexpr,
                HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                SAVE_CKPT: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, NP)
    mask_d = offs_d < DCH
    mask_n = offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    grp = (tl.program_id(1).to(tl.int64) * BLOCK_D) // CPG
    # padded states get A = 0, B = C = 0: they stay 0 and add nothing to y
    A = tl.load(A_ptr + offs_d[:, None] * sA_d + offs_n[None, :] * sA_n, mask=mask_dn, other=0.0).to(ACC)
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(ACC) if HAS_BIAS else tl.zeros([BLOCK_D], ACC)
    Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(ACC) if HAS_D else tl.zeros([BLOCK_D], ACC)
    is_last = (tl.arange(0, BLOCK_T) == BLOCK_T - 1)[:, None, None]
    h = tl.zeros([BLOCK_D, NP], dtype=ACC)
    for tile in range(0, NTILES):
        if SAVE_CKPT:  # state entering this tile, for the backward
            ck = ckpt_ptr + ((pid_b * DCH + offs_d[:, None]) * NTILES + tile) * NP + offs_n[None, :]
            tl.store(ck, h, mask=mask_d[:, None])
        offs_t = tile * BLOCK_T + tl.arange(0, BLOCK_T)
        mask_t = offs_t < L
        m2 = mask_t[:, None] & mask_d[None, :]
        u = tl.load(u_ptr + pid_b * su_b + offs_d[None, :] * su_d + offs_t[:, None] * su_l, mask=m2,
                    other=0.0).to(ACC)
        dt, _ = _delta(dt_ptr + pid_b * sdt_b + offs_d[None, :] * sdt_d + offs_t[:, None] * sdt_l, m2, bias,
                       HAS_BIAS, SOFTPLUS, ACC)
        mtn = mask_t[:, None] & mask_n[None, :]
        Bv = tl.load(B_ptr + pid_b * sB_b + grp * sB_g + offs_n[None, :] * sB_n + offs_t[:, None] * sB_l,
                     mask=mtn, other=0.0).to(ACC)
        Cv = tl.load(C_ptr + pid_b * sC_b + grp * sC_g + offs_n[None, :] * sC_n + offs_t[:, None] * sC_l,
                     mask=mtn, other=0.0).to(ACC)
        dA = tl.exp(dt[:, :, None] * A[None, :, :])
        dBu = (dt * u)[:, :, None] * Bv[:, None, :]
        aa, bb = tl.associative_scan((dA, dBu), axis=0, combine_fn=_combine)
        hs = aa * h[None, :, :] + bb
        y = tl.sum(hs * Cv[:, None, :], axis=2)
        if HAS_D:
            y += Dv[None, :] * u
        if HAS_Z:
            z = tl.load(z_ptr + pid_b * sz_b + offs_d[None, :] * sz_d + offs_t[:, None] * sz_l, mask=m2,
                        other=0.0).to(ACC)
            y = y * z * tl.sigmoid(z)
        tl.store(y_ptr + pid_b * sy_b + offs_d[None, :] * sy_d + offs_t[:, None] * sy_l,
                 y.to(y_ptr.dtype.element_ty), mask=m2)
        h = tl.sum(tl.where(is_last, hs, 0.0), axis=0)  # masked tail steps pass the state through
    tl.store(last_ptr + (pid_b * DCH + offs_d[:, None]) * NP + offs_n[None, :], h, mask=mask_d[:, None])


@triton.jit
def _bwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, ckpt_ptr, dout_ptr, dlast_ptr,
                du_ptr, ddt_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, dB_ptr, dC_ptr,
                L, DCH, CPG, N, NTILES, NDBLK,
                su_b, su_d, su_l, sdt_b, sdt_d, sdt_l, sz_b, sz_d, sz_l, so_b, so_d, so_l, sg_b, sg_d, sg_l,
                sA_d, sA_n, sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
                NP: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr, ACC: tl.constexpr,
                HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                HAS_DLAST: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, NP)
    mask_d = offs_d < DCH
    mask_n = offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    grp = (pid_d * BLOCK_D) // CPG
    A = tl.load(A_ptr + offs_d[:, None] * sA_d + offs_n[None, :] * sA_n, mask=mask_dn, other=0.0).to(ACC)
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(ACC) if HAS_BIAS else tl.zeros([BLOCK_D], ACC)
    Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(ACC) if HAS_D else tl.zeros([BLOCK_D], ACC)
    row = tl.arange(0, BLOCK_T)
    state_ptrs = (pid_b * DCH + offs_d[:, None]) * NP + offs_n[None, :]
    if HAS_DLAST:
        g_carry = tl.load(dlast_ptr + state_ptrs, mask=mask_d[:, None], other=0.0).to(ACC)
    else:
        g_carry = tl.zeros([BLOCK_D, NP], dtype=ACC)
    dA_acc = tl.zeros([BLOCK_D, NP], dtype=ACC)
    dD_acc = tl.zeros([BLOCK_D], dtype=ACC)
    db_acc = tl.zeros([BLOCK_D], dtype=ACC)
    for i in range(0, NTILES):
        tile = NTILES - 1 - i
        h_in = tl.load(ckpt_ptr + ((pid_b * DCH + offs_d[:, None]) * NTILES + tile) * NP + offs_n[None, :],
                       mask=mask_d[:, None], other=0.0)
        offs_t = tile * BLOCK_T + row
        mask_t = offs_t < L
        m2 = mask_t[:, None] & mask_d[None, :]
        mtn = mask_t[:, None] & mask_n[None, :]
        # step t: h_t (scan from the tile-entry state)
        u = tl.load(u_ptr + pid_b * su_b + offs_d[None, :] * su_d + offs_t[:, None] * su_l, mask=m2,
                    other=0.0).to(ACC)
        dt, dsp = _delta(dt_ptr + pid_b * sdt_b + offs_d[None, :] * sdt_d + offs_t[:, None] * sdt_l, m2, bias,
                         HAS_BIAS, SOFTPLUS, ACC)
        Bv = tl.load(B_ptr + pid_b * sB_b + grp * sB_g + offs_n[None, :] * sB_n + offs_t[:, None] * sB_l,
                     mask=mtn, other=0.0).to(ACC)
        Cv = tl.load(C_ptr + pid_b * sC_b + grp * sC_g + offs_n[None, :] * sC_n + offs_t[:, None] * sC_l,
                     mask=mtn, other=0.0).to(ACC)
        dA = tl.exp(dt[:, :, None] * A[None, :, :])
        aa, bb = tl.associative_scan((dA, (dt * u)[:, :, None] * Bv[:, None, :]), axis=0, combine_fn=_combine)
        hs = aa * h_in[None, :, :] + bb
        # step t-1: h_{t-1}, the same scan over inputs shifted by one; row 0 (t-1 = tile start - 1) is the identity
        offs_p = offs_t - 1
        mp = (row > 0) & (offs_p < L)
        mp2 = mp[:, None] & mask_d[None, :]
        u_p = tl.load(u_ptr + pid_b * su_b + offs_d[None, :] * su_d + offs_p[:, None] * su_l, mask=mp2,
                      other=0.0).to(ACC)
        dt_p, _ = _delta(dt_ptr + pid_b * sdt_b + offs_d[None, :] * sdt_d + offs_p[:, None] * sdt_l, mp2, bias,
                         HAS_BIAS, SOFTPLUS, ACC)
        B_p = tl.load(B_ptr + pid_b * sB_b + grp * sB_g + offs_n[None, :] * sB_n + offs_p[:, None] * sB_l,
                      mask=mp[:, None] & mask_n[None, :], other=0.0).to(ACC)
        pa, pb = tl.associative_scan((tl.exp(dt_p[:, :, None] * A[None, :, :]),
                                      (dt_p * u_p)[:, :, None] * B_p[:, None, :]), axis=0, combine_fn=_combine)
        hp = pa * h_in[None, :, :] + pb
        # a_{t+1}, which carries dL/dh_{t+1} back to h_t (1 past the end: dlast enters unchanged)
        offs_x = offs_t + 1
        mx2 = (offs_x < L)[:, None] & mask_d[None, :]
        dt_x, _ = _delta(dt_ptr + pid_b * sdt_b + offs_d[None, :] * sdt_d + offs_x[:, None] * sdt_l, mx2, bias,
                         HAS_BIAS, SOFTPLUS, ACC)
        alpha = tl.exp(dt_x[:, :, None] * A[None, :, :])
        dy = tl.load(dout_ptr + pid_b * so_b + offs_d[None, :] * so_d + offs_t[:, None] * so_l, mask=m2,
                     other=0.0).to(ACC)
        if HAS_Z:  # out = y * silu(z): recompute the pre-gate y
            ypre = tl.sum(hs * Cv[:, None, :], axis=2)
            if HAS_D:
                ypre += Dv[None, :] * u
            z = tl.load(z_ptr + pid_b * sz_b + offs_d[None, :] * sz_d + offs_t[:, None] * sz_l, mask=m2,
                        other=0.0).to(ACC)
            sz = tl.sigmoid(z)
            tl.store(dz_ptr + pid_b * sg_b + offs_d[None, :] * sg_d + offs_t[:, None] * sg_l,
                     dy * ypre * sz * (1.0 + z * (1.0 - sz)), mask=m2)
            dy = dy * z * sz
        ga, gb = tl.associative_scan((alpha, dy[:, :, None] * Cv[:, None, :]), axis=0, combine_fn=_combine,
                                     reverse=True)
        g = ga * g_carry[None, :, :] + gb  # dL/dh_t
        # dB, dC: this block's partial sums over its channels, stored per (b, block, n, t)
        part = ((pid_b * NDBLK + pid_d) * NP + offs_n[None, :]) * L + offs_t[:, None]
        tl.store(dC_ptr + part, tl.sum(dy[:, :, None] * hs, axis=1), mask=mtn)
        tl.store(dB_ptr + part, tl.sum(g * (dt * u)[:, :, None], axis=1), mask=mtn)
        s_b = tl.sum(g * Bv[:, None, :], axis=2)
        glog = g * hp * dA  # dL/d(dt·A)
        dA_acc += tl.sum(glog * dt[:, :, None], axis=0)
        ddt = s_b * u + tl.sum(glog * A[None, :, :], axis=2)
        du = s_b * dt
        if HAS_D:
            du += dy * Dv[None, :]
            dD_acc += tl.sum(dy * u, axis=0)
        ddelta = tl.where(m2, ddt * dsp, 0.0)
        db_acc += tl.sum(ddelta, axis=0)
        tl.store(du_ptr + pid_b * sg_b + offs_d[None, :] * sg_d + offs_t[:, None] * sg_l, du, mask=m2)
        tl.store(ddt_ptr + pid_b * sg_b + offs_d[None, :] * sg_d + offs_t[:, None] * sg_l, ddelta, mask=m2)
        g_carry = tl.sum(tl.where((row == 0)[:, None, None], g, 0.0), axis=0)  # dL/dh_{t0}; alpha adds a_{t0}
    tl.store(dA_ptr + state_ptrs, dA_acc, mask=mask_d[:, None])
    if HAS_D:
        tl.store(dD_ptr + pid_b * DCH + offs_d, dD_acc, mask=mask_d)
    if HAS_BIAS:
        tl.store(dbias_ptr + pid_b * DCH + offs_d, db_acc, mask=mask_d)


def block_d(cpg: int) -> int:
    """Largest power of two <= 16 dividing the channels per group, so a block never straddles two groups."""
    bd = 16
    while cpg % bd:
        bd //= 2
    return bd


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _strides(*xs: torch.Tensor) -> list[int]:
    return [s for x in xs for s in x.stride()]


class _TritonScan(torch.autograd.Function):
    """u, delta, z: (b, d, l) any float dtype; A: (d, n) compute dtype; B, C: (b, g, n, l); D, bias: (d,)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, bias, softplus: bool):
        b, d, length = u.shape
        g, n = B.shape[1], A.shape[1]
        ct = A.dtype
        np_, bd = triton.next_power_of_2(n), block_d(d // g)
        ntiles = triton.cdiv(length, BLOCK_T)
        y = torch.empty_like(u)
        last = u.new_empty(b, d, np_, dtype=ct)
        need_grad = any(ctx.needs_input_grad)
        ckpt = u.new_empty(b, d, ntiles, np_, dtype=ct) if need_grad else last
        zz = z if z is not None else u
        _fwd_kernel[(b, d // bd)](
            u, delta, A, B, C, D if D is not None else u, zz, bias if bias is not None else u, y, last, ckpt,
            length, d, d // g, n, ntiles, *_strides(u, delta, zz, y, A, B, C),
            NP=np_, BLOCK_D=bd, BLOCK_T=BLOCK_T, ACC=_acc(ct), HAS_D=D is not None, HAS_Z=z is not None,
            HAS_BIAS=bias is not None, SOFTPLUS=softplus, SAVE_CKPT=need_grad)
        if need_grad:
            ctx.save_for_backward(u, delta, A, B, C, D, z, bias, ckpt)
            ctx.softplus = softplus
        ctx.set_materialize_grads(False)
        return y, last[..., :n]

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, bias, ckpt = ctx.saved_tensors
        b, d, length = u.shape
        g, n = B.shape[1], A.shape[1]
        ct = A.dtype
        np_, bd = triton.next_power_of_2(n), block_d(d // g)
        ntiles, ndblk = ckpt.shape[2], d // bd
        dout = torch.zeros_like(u) if dout is None else dout
        if dlast is not None:
            dlast = torch.nn.functional.pad(dlast.to(ct), (0, np_ - n)).contiguous()
        du = u.new_empty(b, d, length, dtype=ct)  # du, ddelta, dz share du's (contiguous) strides
        ddelta, dz = torch.empty_like(du), torch.empty_like(du) if z is not None else None
        dA = u.new_empty(b, d, np_, dtype=ct)
        dD = u.new_empty(b, d, dtype=ct) if D is not None else None
        dbias = u.new_empty(b, d, dtype=ct) if bias is not None else None
        dBp = u.new_empty(b, ndblk, np_, length, dtype=ct)
        dCp = torch.empty_like(dBp)
        zz = z if z is not None else u
        _bwd_kernel[(b, ndblk)](
            u, delta, A, B, C, D if D is not None else u, zz, bias if bias is not None else u, ckpt,
            dout, dlast if dlast is not None else ckpt, du, ddelta, dz if dz is not None else du, dA,
            dD if dD is not None else du, dbias if dbias is not None else du, dBp, dCp,
            length, d, d // g, n, ntiles, ndblk, *_strides(u, delta, zz, dout, du, A, B, C),
            NP=np_, BLOCK_D=bd, BLOCK_T=BLOCK_T, ACC=_acc(ct), HAS_D=D is not None, HAS_Z=z is not None,
            HAS_BIAS=bias is not None, SOFTPLUS=ctx.softplus, HAS_DLAST=dlast is not None)

        def per_group(x: torch.Tensor) -> torch.Tensor:  # (b, ndblk, np, l) -> (b, g, n, l)
            return x.view(b, g, ndblk // g, np_, length).sum(2)[:, :, :n].to(B.dtype)

        def cast(x: torch.Tensor | None, like: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None or like is None else x.to(like.dtype)

        return (du.to(u.dtype), ddelta.to(delta.dtype), dA.sum(0)[:, :n], per_group(dBp), per_group(dCp),
                cast(None if dD is None else dD.sum(0), D), cast(dz, z),
                cast(None if dbias is None else dbias.sum(0), bias), None)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False):
    """Same contract as ``reference.selective_scan_ref``; CUDA tensors (or CPU under TRITON_INTERPRET=1).

    u, delta, z: (b, d, l); A: (d, n); B, C: (b, n, l) or (b, g, n, l); D, delta_bias: (d,).
    Returns y (b, d, l) in u's dtype [, last state (b, d, n) in float32, or float64 for float64 inputs].
    """
    shape = check_inputs(u, delta, A, B, C, D, z, delta_bias)
    ct = compute_dtype(u)
    y, last = _TritonScan.apply(u, delta, A.to(ct), as_groups(B, shape.g), as_groups(C, shape.g), D, z,
                                delta_bias, bool(delta_softplus))
    return (y, last) if return_last_state else y


def probe() -> str | None:
    """Triton itself imports (this module did); the GPU is checked by the device filter in dispatch."""
    if not hasattr(tl, "associative_scan"):
        return f"triton {triton.__version__} has no tl.associative_scan (need >= 2.2)"
    return None
