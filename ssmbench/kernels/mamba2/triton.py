"""SSD forward as a Triton chunk pipeline (the structure of mamba_ssm's ``ssd_*.py``), backward by recomputation.

Forward, for chunks of Q tokens (glossary as in ``reference.py``):

- torch: dt = softplus(dt + dt_bias); dA_cs = cumsum over each chunk of dt·A, (b, h, c, Q), zero-padded;
- ``_bmm_chunk_kernel``: CB = C Bᵀ per chunk and **per group** (b, c, g, Q, Q);
- ``_chunk_state_kernel``: S_c = Σ_j x_j (dt_j exp(dA_cs_last − dA_cs_j) B_j)ᵀ per chunk and head (b, c, h, p, n);
- ``_state_passing_kernel``: sequential over chunks, s ← exp(dA_cs_last)·s + S_c; writes the state entering each
  chunk and the final state;
- ``_chunk_scan_kernel``: y_i = exp(dA_cs_i) C_i s_prev + Σ_{j≤i} CB_ij exp(dA_cs_i − dA_cs_j) dt_j x_j, + D·x,
  ·silu(z).

Like upstream, decays inside a chunk are exp of differences of the fp32 chunk cumsum (clamped by the causal mask),
which is accurate in fp32 for chunk-length sums. Accumulation is float32 (float64 for float64 inputs);
float32 ``tl.dot`` runs with IEEE precision so results match the references, 16-bit inputs feed the tensor cores
in their own dtype. The backward pass recomputes the forward with the chunked PyTorch path under autograd
(``_SSDTriton.backward``), so gradients are exact but run at PyTorch speed. Runs on CUDA, or on CPU tensors under
``TRITON_INTERPRET=1`` (the interpreter is chosen when this module is imported), which is how the tests run it.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from ssmbench.kernels.mamba2.chunked import ssd_chunked
from ssmbench.kernels.mamba2.reference import check_ssd_inputs, compute_dtype, process_dt

_TL_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32,
              torch.float64: tl.float64}


@triton.jit
def _bmm_chunk_kernel(c_ptr, b_ptr, cb_ptr, seqlen, nchunks, n_state,
                      s_cb, s_cl, s_cg, s_cn, s_bb, s_bl, s_bg, s_bn,
                      CHUNK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      ACC: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr):
    pid_mn, pid_bc, g = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    bi, c = pid_bc // nchunks, pid_bc % nchunks
    nblk_n = tl.cdiv(CHUNK, BLOCK_N)
    rows = (pid_mn // nblk_n) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = (pid_mn % nblk_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    chunk_len = tl.minimum(CHUNK, seqlen - c * CHUNK)
    c_base = c_ptr + bi * s_cb + (c * CHUNK) * s_cl + g * s_cg
    b_base = b_ptr + bi * s_bb + (c * CHUNK) * s_bl + g * s_bg
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for k0 in range(0, n_state, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        ct = tl.load(c_base + rows[:, None] * s_cl + kk[None, :] * s_cn,
                     mask=(rows[:, None] < chunk_len) & (kk[None, :] < n_state), other=0.0)
        bt = tl.load(b_base + cols[None, :] * s_bl + kk[:, None] * s_bn,
                     mask=(cols[None, :] < chunk_len) & (kk[:, None] < n_state), other=0.0)
        acc += tl.dot(ct.to(DOT), bt.to(DOT), input_precision=PREC).to(ACC)
    out = cb_ptr + ((bi * nchunks + c) * tl.num_programs(2) + g) * CHUNK * CHUNK
    tl.store(out + rows[:, None] * CHUNK + cols[None, :], acc, mask=(rows[:, None] < CHUNK) & (cols[None, :] < CHUNK))


@triton.jit
def _chunk_state_kernel(x_ptr, b_ptr, dt_ptr, dacs_ptr, st_ptr, seqlen, nchunks, nheads, heads_per_group,
                        headdim, n_state,
                        s_xb, s_xl, s_xh, s_xp, s_bb, s_bl, s_bg, s_bn, s_db, s_dl, s_dh,
                        CHUNK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        ACC: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr):
    pid_mn, pid_bc, h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    bi, c = pid_bc // nchunks, pid_bc % nchunks
    g = h // heads_per_group
    nblk_n = tl.cdiv(n_state, BLOCK_N)
    pm = (pid_mn // nblk_n) * BLOCK_M + tl.arange(0, BLOCK_M)  # head-dim rows
    nn = (pid_mn % nblk_n) * BLOCK_N + tl.arange(0, BLOCK_N)  # state cols
    chunk_len = tl.minimum(CHUNK, seqlen - c * CHUNK)
    dacs_base = dacs_ptr + ((bi * nheads + h) * nchunks + c) * CHUNK
    da_last = tl.load(dacs_base + CHUNK - 1)
    x_base = x_ptr + bi * s_xb + (c * CHUNK) * s_xl + h * s_xh
    b_base = b_ptr + bi * s_bb + (c * CHUNK) * s_bl + g * s_bg
    dt_base = dt_ptr + bi * s_db + (c * CHUNK) * s_dl + h * s_dh
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for k0 in range(0, chunk_len, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        valid = kk < chunk_len
        xt = tl.load(x_base + kk[None, :] * s_xl + pm[:, None] * s_xp,
                     mask=valid[None, :] & (pm[:, None] < headdim), other=0.0)
        bt = tl.load(b_base + kk[:, None] * s_bl + nn[None, :] * s_bn,
                     mask=valid[:, None] & (nn[None, :] < n_state), other=0.0).to(ACC)
        dt_k = tl.load(dt_base + kk * s_dl, mask=valid, other=0.0).to(ACC)
        da_k = tl.load(dacs_base + kk, mask=valid, other=0.0)
        scale = tl.where(valid, tl.exp(da_last - da_k) * dt_k, 0.0)
        acc += tl.dot(xt.to(DOT), (bt * scale[:, None]).to(DOT), input_precision=PREC).to(ACC)
    out = st_ptr + ((bi * nchunks + c) * nheads + h) * headdim * n_state
    tl.store(out + pm[:, None] * n_state + nn[None, :], acc, mask=(pm[:, None] < headdim) & (nn[None, :] < n_state))


@triton.jit
def _state_passing_kernel(st_ptr, dacs_ptr, init_ptr, prev_ptr, final_ptr, nchunks, nheads, dim,
                          CHUNK: tl.constexpr, HAS_INIT: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    pid, bi, h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < dim
    if HAS_INIT:
        s = tl.load(init_ptr + (bi * nheads + h) * dim + offs, mask=mask, other=0.0).to(ACC)
    else:
        s = tl.zeros((BLOCK,), dtype=ACC)
    for c in range(0, nchunks):
        slot = ((bi * nchunks + c) * nheads + h) * dim
        tl.store(prev_ptr + slot + offs, s, mask=mask)
        new = tl.load(st_ptr + slot + offs, mask=mask, other=0.0)
        da_tot = tl.load(dacs_ptr + ((bi * nheads + h) * nchunks + c) * CHUNK + CHUNK - 1)
        s = tl.exp(da_tot) * s + new
    tl.store(final_ptr + (bi * nheads + h) * dim + offs, s, mask=mask)


@triton.jit
def _chunk_scan_kernel(cb_ptr, x_ptr, dt_ptr, dacs_ptr, c_ptr, prev_ptr, d_ptr, z_ptr, out_ptr,
                       seqlen, nchunks, nheads, ngroups, heads_per_group, headdim, n_state,
                       s_xb, s_xl, s_xh, s_xp, s_cb, s_cl, s_cg, s_cn, s_db, s_dl, s_dh,
                       s_zb, s_zl, s_zh, s_zp, s_ob, s_ol, s_oh, s_op,
                       CHUNK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       BLOCK_S: tl.constexpr, HAS_D: tl.constexpr, D_PER_P: tl.constexpr, HAS_Z: tl.constexpr,
                       ACC: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr):
    pid_mn, pid_bc, h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    bi, c = pid_bc // nchunks, pid_bc % nchunks
    g = h // heads_per_group
    nblk_n = tl.cdiv(headdim, BLOCK_N)
    pid_m = pid_mn // nblk_n
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # positions in the chunk
    pc = (pid_mn % nblk_n) * BLOCK_N + tl.arange(0, BLOCK_N)  # head-dim cols
    chunk_len = tl.minimum(CHUNK, seqlen - c * CHUNK)
    row_ok = rows < chunk_len
    dacs_base = dacs_ptr + ((bi * nheads + h) * nchunks + c) * CHUNK
    da_m = tl.load(dacs_base + rows, mask=row_ok, other=0.0)
    x_base = x_ptr + bi * s_xb + (c * CHUNK) * s_xl + h * s_xh
    dt_base = dt_ptr + bi * s_db + (c * CHUNK) * s_dl + h * s_dh

    # Off-diagonal part: C_i · s_prev, scaled by the decay since the chunk start.
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    c_base = c_ptr + bi * s_cb + (c * CHUNK) * s_cl + g * s_cg
    prev_base = prev_ptr + ((bi * nchunks + c) * nheads + h) * headdim * n_state
    for k0 in range(0, n_state, BLOCK_S):
        kk = k0 + tl.arange(0, BLOCK_S)
        ct = tl.load(c_base + rows[:, None] * s_cl + kk[None, :] * s_cn,
                     mask=row_ok[:, None] & (kk[None, :] < n_state), other=0.0)
        st = tl.load(prev_base + pc[None, :] * n_state + kk[:, None],
                     mask=(kk[:, None] < n_state) & (pc[None, :] < headdim), other=0.0)
        acc += tl.dot(ct.to(DOT), st.to(DOT), input_precision=PREC).to(ACC)
    acc = acc * tl.exp(da_m)[:, None]

    # Diagonal block: causal (CB ∘ decay ∘ dt) @ x over the chunk positions up to this row block.
    cb_base = cb_ptr + ((bi * nchunks + c) * ngroups + g) * CHUNK * CHUNK
    hi = tl.minimum((pid_m + 1) * BLOCK_M, chunk_len)
    for k0 in range(0, hi, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        col_ok = kk < chunk_len
        cb = tl.load(cb_base + rows[:, None] * CHUNK + kk[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0)
        da_k = tl.load(dacs_base + kk, mask=col_ok, other=0.0)
        dt_k = tl.load(dt_base + kk * s_dl, mask=col_ok, other=0.0).to(ACC)
        causal = (rows[:, None] >= kk[None, :]) & col_ok[None, :]
        seg = tl.where(causal, da_m[:, None] - da_k[None, :], float("-inf"))  # masked entries -> exp = 0
        w = cb * tl.exp(seg) * dt_k[None, :]
        xt = tl.load(x_base + kk[:, None] * s_xl + pc[None, :] * s_xp,
                     mask=col_ok[:, None] & (pc[None, :] < headdim), other=0.0)
        acc += tl.dot(w.to(DOT), xt.to(DOT), input_precision=PREC).to(ACC)

    io_mask = row_ok[:, None] & (pc[None, :] < headdim)
    if HAS_D:
        if D_PER_P:
            dv = tl.load(d_ptr + h * headdim + pc, mask=pc < headdim, other=0.0).to(ACC)
        else:
            dv = tl.load(d_ptr + h + pc * 0).to(ACC)
        xm = tl.load(x_base + rows[:, None] * s_xl + pc[None, :] * s_xp, mask=io_mask, other=0.0).to(ACC)
        acc += xm * dv[None, :]
    if HAS_Z:
        zt = tl.load(z_ptr + bi * s_zb + (c * CHUNK + rows[:, None]) * s_zl + h * s_zh + pc[None, :] * s_zp,
                     mask=io_mask, other=0.0).to(ACC)
        acc = acc * zt / (1.0 + tl.exp(-zt))
    out = out_ptr + bi * s_ob + (c * CHUNK + rows[:, None]) * s_ol + h * s_oh + pc[None, :] * s_op
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=io_mask)


def _block(dim: int, cap: int = 64) -> int:
    """Power-of-two tile for a dimension, at least 16 (tl.dot's minimum), at most ``cap``."""
    return max(16, min(cap, triton.next_power_of_2(dim)))


def ssd_triton_forward(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False,
                       initial_states=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the Triton pipeline; returns y (b, l, h, p) in x's dtype and the final states (b, h, p, n)."""
    b, length, h, p, g, n = check_ssd_inputs(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states)
    if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("the triton SSD backend needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tests)")
    Q = int(chunk_size)
    ct = compute_dtype(x)
    acc_t = _TL_DTYPES[ct]
    dot_t = _TL_DTYPES[x.dtype] if x.dtype in (torch.float16, torch.bfloat16) else acc_t
    prec = "ieee"
    nchunks = max(1, math.ceil(length / Q))
    dtc = process_dt(dt, dt_bias, dt_softplus, ct).contiguous()  # (b, l, h)
    dA = torch.nn.functional.pad(dtc * A.to(ct), (0, 0, 0, nchunks * Q - length))
    dacs = dA.view(b, nchunks, Q, h).permute(0, 3, 1, 2).cumsum(-1).contiguous()  # (b, h, c, Q)
    x, B, C = x.contiguous(), B.contiguous(), C.contiguous()
    dev = x.device

    cb = torch.empty(b, nchunks, g, Q, Q, device=dev, dtype=ct)
    bm = _block(Q)
    bk_n = _block(n)
    _bmm_chunk_kernel[(triton.cdiv(Q, bm) ** 2, b * nchunks, g)](
        C, B, cb, length, nchunks, n, *C.stride(), *B.stride(),
        CHUNK=Q, BLOCK_M=bm, BLOCK_N=bm, BLOCK_K=bk_n, ACC=acc_t, DOT=dot_t, PREC=prec)

    states = torch.empty(b, nchunks, h, p, n, device=dev, dtype=ct)
    bp, bn, bq = _block(p), _block(n), _block(Q)
    _chunk_state_kernel[(triton.cdiv(p, bp) * triton.cdiv(n, bn), b * nchunks, h)](
        x, B, dtc, dacs, states, length, nchunks, h, h // g, p, n, *x.stride(), *B.stride(), *dtc.stride(),
        CHUNK=Q, BLOCK_M=bp, BLOCK_N=bn, BLOCK_K=bq, ACC=acc_t, DOT=dot_t, PREC=prec)

    prev = torch.empty_like(states)
    final = torch.empty(b, h, p, n, device=dev, dtype=ct)
    init = initial_states.to(ct).contiguous() if initial_states is not None else final  # dummy pointer if absent
    block = min(1024, triton.next_power_of_2(p * n))
    _state_passing_kernel[(triton.cdiv(p * n, block), b, h)](
        states, dacs, init, prev, final, nchunks, h, p * n,
        CHUNK=Q, HAS_INIT=initial_states is not None, BLOCK=block, ACC=acc_t)

    y = torch.empty(b, length, h, p, device=dev, dtype=x.dtype)
    Dc = D.to(ct).contiguous() if D is not None else dacs  # dummy pointers when absent
    zc = z.contiguous() if z is not None else y
    _chunk_scan_kernel[(triton.cdiv(Q, bq) * triton.cdiv(p, bp), b * nchunks, h)](
        cb, x, dtc, dacs, C, prev, Dc, zc, y, length, nchunks, h, g, h // g, p, n,
        *x.stride(), *C.stride(), *dtc.stride(), *zc.stride(), *y.stride(),
        CHUNK=Q, BLOCK_M=bq, BLOCK_N=bp, BLOCK_K=bq, BLOCK_S=bn, HAS_D=D is not None,
        D_PER_P=D is not None and D.dim() == 2, HAS_Z=z is not None, ACC=acc_t, DOT=dot_t, PREC=prec)
    return y, final


class _SSDTriton(torch.autograd.Function):
    """Triton forward; backward recomputes the forward with ``ssd_chunked`` under autograd (exact gradients)."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, z, dt_bias, initial_states, chunk_size, dt_softplus):
        ctx.save_for_backward(x, dt, A, B, C, D, z, dt_bias, initial_states)
        ctx.chunk_size, ctx.dt_softplus = chunk_size, dt_softplus
        return ssd_triton_forward(x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus,
                                  initial_states=initial_states)

    @staticmethod
    def backward(ctx, grad_y, grad_final):
        needs = ctx.needs_input_grad[:9]
        with torch.enable_grad():
            inputs = [None if t is None else t.detach().requires_grad_(need)
                      for t, need in zip(ctx.saved_tensors, needs, strict=True)]
            x, dt, A, B, C, D, z, dt_bias, initial_states = inputs
            y, final = ssd_chunked(x, dt, A, B, C, ctx.chunk_size, D=D, z=z, dt_bias=dt_bias,
                                   dt_softplus=ctx.dt_softplus, initial_states=initial_states,
                                   return_final_states=True)
            wanted = [t for t, need in zip(inputs, needs, strict=True) if need]
            grads = iter(torch.autograd.grad((y, final), wanted, (grad_y, grad_final), allow_unused=True))
        return (*(next(grads) if need else None for need in needs), None, None)


def ssd_triton(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False,
               initial_states=None, return_final_states=False):
    """Triton SSD (signature of ``ssd_ref``). Returns y (b, l, h, p) [, final_states (b, h, p, n)]."""
    check_ssd_inputs(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states)
    y, final = _SSDTriton.apply(x, dt, A, B, C, D, z, dt_bias, initial_states, int(chunk_size), bool(dt_softplus))
    return (y, final) if return_final_states else y
