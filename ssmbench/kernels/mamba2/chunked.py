"""Chunked SSD (Mamba-2 paper, Listing 1) in pure PyTorch, blocked over the sequence to bound memory.

The sequence is cut into chunks of Q tokens. Per chunk (glossary as in ``reference.py``; a = dt·A, the log decay):

1. intra-chunk (diagonal blocks): Y_diag = (L ∘ C Bᵀ) (dt ⊙ x), L_ij = exp(a_{j+1} + … + a_i) for i ≥ j, else 0;
   L comes from a *stable* segment sum (a masked cumulative sum, never a difference of two cumsums), and
   C Bᵀ is formed once per group of B/C, then broadcast over the h/g heads that share it;
2. chunk states: S_c = Σ_j exp(a_{j+1} + … + a_Q) dt_j x_j B_jᵀ, one (r·p × Q)·(Q × n) GEMM per group;
3. state passing: S_prev[c] = exp(Σ a over chunk c−1) S_prev[c−1] + S_{c−1}, starting from ``initial_states``;
4. state → output: Y_off = exp(a_1 + … + a_i) C_i S_prev[c].

Chunks are processed in *blocks* of several chunks (steps 1–4 vectorised within a block, the state carried from
block to block), so the quadratic (Q × Q) and state intermediates scale with the block, not with L: peak memory
stays near the size of the inputs and outputs. L need not be a multiple of Q: the last block is zero-padded with
dt = 0, which makes padded steps the identity on the state. Heads are split as (g, r) with r = h / g, so B and C
are never copied per head. With gradients the blocks run without autograd, keeping only the chunk-entry states,
and ``backward.py`` computes every gradient from batched GEMMs (autograd through these blocks was 3x slower than
the paper's listing at L=16k).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ssmbench.kernels.mamba2.backward import ssd_trainable
from ssmbench.kernels.mamba2.reference import (
    apply_skip_and_gate,
    check_ssd_inputs,
    compute_dtype,
    process_dt,
    stable_segsum,
)

# Tokens per block. Small blocks keep one block's working set (x, the Q x Q decay matrices, the chunk states)
# in cache; measured on a 2-core AVX-512 CPU at h=8, p=n=64 (L=1k..4k), 128-512 tokens ran 10-30% faster than
# 1024-4096, and the per-block Python overhead (~40 small ops) stays below 10% from 256 tokens up.
BLOCK_TOKENS = 256


def block_len(chunk: int) -> int:
    """Tokens per block: whole chunks, about BLOCK_TOKENS of them (at least one chunk)."""
    return chunk * max(1, BLOCK_TOKENS // chunk)


def _ssd_block(x, dt, A, B, C, chunk: int, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One block of whole chunks. x: (b, T, h, p); dt: (b, T, h) processed; A: (h,); B, C: (b, T, g, n);
    state: (b, g, n, r, p) entering the block. Returns y (b, T, h, p) without D/z, the state leaving the block and
    the states entering each of its K chunks, (b, g, K, n, r·p)."""
    b, T, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    r, ct = h // g, dt.dtype
    K = math.ceil(T / chunk)
    pad = K * chunk - T
    x, B, C = x.to(ct), B.to(ct), C.to(ct)
    if pad:  # zero x and dt: a padded step neither decays nor feeds the state
        x, B, C = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x, B, C))
        dt = F.pad(dt, (0, 0, 0, pad))
    x6 = x.view(b, K, chunk, g, r, p).permute(0, 3, 1, 2, 4, 5)  # (b, g, K, Q, r, p); a view when g == 1
    dt5 = dt.view(b, K, chunk, g, r).permute(0, 3, 1, 4, 2).contiguous()  # (b, g, K, r, Q)
    Bc = B.view(b, K, chunk, g, n).permute(0, 3, 1, 2, 4)  # (b, g, K, Q, n)
    Cc = C.view(b, K, chunk, g, n).permute(0, 3, 1, 2, 4)
    dA = dt5 * A.view(g, r)[None, :, None, :, None]  # (b, g, K, r, Q) log decays
    decay = stable_segsum(dA).exp()  # (b, g, K, r, Q, Q); above the diagonal exp(0) = 1, masked below

    # 1. intra-chunk, per head: (L ∘ CBᵀ) @ (dt ⊙ x); CBᵀ once per group, masked to the causal triangle there.
    CB = (Cc @ Bc.transpose(-1, -2)).tril()  # (b, g, K, Q, Q)
    xdt = (dt5[..., None] * x6.transpose(3, 4)).contiguous()  # (b, g, K, r, Q, p), the layout the GEMM wants
    y_diag = (decay * CB[:, :, :, None]) @ xdt  # (b, g, K, r, Q, p)
    del CB, xdt

    # 2. chunk states, per group: (n × Q)·(Q × r·p). Weights exp(a_{j+1} + … + a_Q)·dt_j are the decay matrix's
    # last row (stable, no subtraction).
    w = (decay[..., -1, :] * dt5).transpose(-1, -2)[..., None]  # (b, g, K, Q, r, 1)
    del decay
    states = (Bc.transpose(-1, -2) @ (x6 * w).reshape(b, g, K, chunk, r * p)).view(b, g, K, n, r, p)

    # 3. state passing, sequential over the K chunks of the block (elementwise, O(h·p·n) each).
    log_cum = dA.cumsum(-1)  # (b, g, K, r, Q): a_1 + … + a_i, a plain forward sum
    chunk_decay = log_cum[..., -1].exp()[:, :, :, None, :, None]  # (b, g, K, 1, r, 1)
    prev = []
    for k in range(K):
        prev.append(state)
        state = torch.addcmul(states[:, :, k], state, chunk_decay[:, :, k])
    del states
    s_prev = torch.stack(prev, dim=2).view(b, g, K, n, r * p)

    # 4. state -> output, per group: (Q × n)·(n × r·p), scaled per head by the decay since the chunk start.
    y = (Cc @ s_prev).view(b, g, K, chunk, r, p) * log_cum.exp().transpose(-1, -2)[..., None]
    y = (y + y_diag.transpose(3, 4)).permute(0, 2, 3, 1, 4, 5).reshape(b, K * chunk, h, p)  # a view when g == 1
    return y[:, :T], state, s_prev


def forward_with_states(x, dt, A, B, C, D, S0, chunk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The core op for ``backward.ssd_trainable`` (compute-dtype inputs, dt processed, D or None, no z):
    y (b, l, h, p), final (b, h, p, n) and the state entering every chunk, (b, ceil(l / chunk), h, n, p)."""
    b, length, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    r = h // g
    state = x.new_zeros(b, g, n, r, p) if S0 is None else S0.reshape(b, g, r, p, n).permute(0, 1, 4, 2, 3)
    y = x.new_empty(b, length, h, p)
    s_prev = x.new_empty(b, math.ceil(length / chunk), g, r, n, p)
    step = block_len(chunk)
    for t0 in range(0, length, step):
        sl = slice(t0, min(t0 + step, length))
        yb, state, sp = _ssd_block(x[:, sl], dt[:, sl], A, B[:, sl], C[:, sl], chunk, state)
        y[:, sl] = apply_skip_and_gate(yb, x[:, sl], D, None)
        k0 = t0 // chunk
        s_prev[:, k0:k0 + sp.shape[2]] = sp.view(b, g, -1, n, r, p).permute(0, 2, 1, 4, 3, 5)
    return y, state.permute(0, 1, 3, 4, 2).reshape(b, h, p, n), s_prev.view(b, -1, h, n, p)


def ssd_chunked(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False,
                initial_states=None, return_final_states=False):
    """Chunked SSD, any device. x: (b, l, h, p); dt: (b, l, h); A: (h,); B, C: (b, l, g, n); D: (h,) or (h, p);
    z: (b, l, h, p); dt_bias: (h,); initial_states: (b, h, p, n).

    Returns y (b, l, h, p) in x's dtype [, final_states (b, h, p, n) in float32, float64 for float64 inputs].
    """
    b, length, h, p, g, n = check_ssd_inputs(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states)
    tensors = (x, dt, A, B, C, D, z, dt_bias, initial_states)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return ssd_trainable(forward_with_states, x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias,
                             dt_softplus=dt_softplus, initial_states=initial_states,
                             return_final_states=return_final_states)
    r, chunk = h // g, int(chunk_size)
    ct = compute_dtype(x)
    dtc = process_dt(dt, dt_bias, dt_softplus, ct)
    Ac = A.to(ct)
    if initial_states is None:
        state = x.new_zeros(b, g, n, r, p, dtype=ct)
    else:  # (b, h, p, n) -> the block layout (b, g, n, r, p)
        state = initial_states.to(ct).reshape(b, g, r, p, n).permute(0, 1, 4, 2, 3)
    y = x.new_empty(b, length, h, p)
    step = block_len(chunk)
    for t0 in range(0, length, step):
        sl = slice(t0, min(t0 + step, length))
        yb, state, _ = _ssd_block(x[:, sl], dtc[:, sl], Ac, B[:, sl], C[:, sl], chunk, state)
        # Writing into slices of a fresh tensor is autograd-safe (CopySlices) and avoids a final torch.cat copy.
        y[:, sl] = apply_skip_and_gate(yb, x[:, sl], D, None if z is None else z[:, sl])
    if not return_final_states:
        return y
    return y, state.permute(0, 1, 3, 4, 2).reshape(b, h, p, n)
