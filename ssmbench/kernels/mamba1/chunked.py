"""Chunked selective scan in pure PyTorch: any device, float32/float64, forward and backward.

The length is cut into ``nc`` chunks of ``Q`` steps, and the chunks become a batch dimension:
1. local pass: run the recurrence from a zero state inside every chunk at once, one chunk position at a time
   (Q steps over (b, d, nc, n) tensors) -> each chunk's local end state;
2. carry pass: h_end(c) = exp(A · Σ_chunk dt) ⊙ h_end(c-1) + local_end(c), sequential over the nc chunks on
   (b, d, n) tensors -> the true state entering every chunk;
3. output pass: re-run the recurrence inside every chunk from its true entering state, emitting y.
So there are ~2Q + nc sequential steps instead of l, with Q ≈ √l, and only multiplications by decays
exp(dt·A) ≤ 1 (for A ≤ 0) — no exp(-cumsum) rescaling that could overflow. No tensor holds (b, d, l, n): the
largest are (b, d, nc, n) = 1/Q of it. The backward (a custom autograd.Function) runs the same three passes on
the reverse recurrence dL/dh_{t-1} = exp(dt_t A) ⊙ dL/dh_t + ..., recomputing states from the chunk-entering
states saved by the forward, over groups of chunks sized to a memory budget.

D, z, delta_bias and softplus stay in ordinary torch ops around the core Function, so autograd covers them.
"""

from __future__ import annotations

import math

import torch

from ssmbench.kernels.mamba1._common import as_groups, check_inputs, compute_dtype, gate, prepare_delta

_GROUP_BUDGET = 1 << 22  # elements per backward state buffer (2 alive): 16 MiB each in float32


def default_chunk(length: int) -> int:
    """Q ≈ √l rounded to a power of two, balancing the Q-step passes against the l/Q-step carry pass."""
    return 1 << max(0, round(math.log2(max(length, 1)) / 2))


def _by_position(x: torch.Tensor, nc: int, q: int) -> torch.Tensor:
    """(..., l) -> (q, ..., nc), zero-padded to nc·q steps, in one copy: position j of every chunk is one
    contiguous slice."""
    length = x.shape[-1]
    out = x.new_empty(q, *x.shape[:-1], nc)
    full, rem = divmod(length, q)
    out[..., :full] = x[..., :full * q].unflatten(-1, (full, q)).movedim(-1, 0)
    if rem:
        out[:rem, ..., full] = x[..., full * q:].movedim(-1, 0)
        out[rem:, ..., full] = 0
    return out


def _from_position(x: torch.Tensor, length: int) -> torch.Tensor:
    """Inverse of _by_position: (q, ..., nc) -> (..., length)."""
    x = x.movedim(0, -1)
    return x.reshape(*x.shape[:-2], -1)[..., :length]


class _ChunkedScan(torch.autograd.Function):
    """u, dt: (b, d, l); A: (d, n); B, C: (b, g, n, l) -> y = <C_t, h_t> (b, d, l), last state (b, d, n)."""

    @staticmethod
    def forward(ctx, u, dt, A, B, C, q: int):
        b, d, length = u.shape
        g, n = B.shape[1], A.shape[1]
        cpg, nc = d // g, -(-length // q)
        Ar = A.reshape(g, cpg, 1, n)
        # padded steps have dt = 0, so they pass the state through unchanged
        dtq = _by_position(dt.reshape(b, g, cpg, -1), nc, q)  # (q, b, g, cpg, nc)
        dtuq = _by_position((dt * u).reshape(b, g, cpg, -1), nc, q)
        Bq = _by_position(B, nc, q).transpose(-1, -2).contiguous().unsqueeze(3)  # (q, b, g, 1, nc, n)
        Cq = _by_position(C, nc, q).transpose(-1, -2).contiguous().unsqueeze(3)

        h = u.new_zeros(b, g, cpg, nc, n)
        a = torch.empty_like(h)  # in-place updates: one buffer for the pass, not one per op
        for j in range(q):  # 1. local end states, every chunk at once
            torch.mul(dtq[j].unsqueeze(-1), Ar, out=a).exp_()
            h.mul_(a).addcmul_(dtuq[j].unsqueeze(-1), Bq[j])
        decay = torch.exp(dtq.sum(0).unsqueeze(-1) * Ar)  # (b, g, cpg, nc, n): product of a chunk's decays
        h_in = torch.empty_like(h)  # 2. state entering each chunk
        state = u.new_zeros(b, g, cpg, n)
        for c in range(nc):
            h_in[..., c, :] = state
            state = torch.addcmul(h[..., c, :], decay[..., c, :], state)
        y = u.new_empty(q, b, g, cpg, nc)
        h = h_in.clone()
        for j in range(q):  # 3. outputs
            torch.mul(dtq[j].unsqueeze(-1), Ar, out=a).exp_()
            h.mul_(a).addcmul_(dtuq[j].unsqueeze(-1), Bq[j])
            torch.sum(torch.mul(h, Cq[j], out=a), dim=-1, out=y[j])
        ctx.save_for_backward(u, dt, A, B, C, h_in, decay)
        ctx.q = q
        ctx.set_materialize_grads(False)
        return _from_position(y, length).reshape(b, d, length), state.reshape(b, d, n)

    @staticmethod
    def backward(ctx, dy, dlast):
        u, dt, A, B, C, h_in, decay = ctx.saved_tensors
        q = ctx.q
        b, d, length = u.shape
        g, n = B.shape[1], A.shape[1]
        cpg, nc = d // g, -(-length // q)
        Ar = A.reshape(g, cpg, 1, n)
        dy = torch.zeros_like(u) if dy is None else dy
        uq = _by_position(u.reshape(b, g, cpg, -1), nc, q)
        dtq = _by_position(dt.reshape(b, g, cpg, -1), nc, q)
        dtuq = dtq * uq
        dyq = _by_position(dy.reshape(b, g, cpg, -1), nc, q)
        Bq = _by_position(B, nc, q).transpose(-1, -2).contiguous().unsqueeze(3)  # (q, b, g, 1, nc, n)
        Cq = _by_position(C, nc, q).transpose(-1, -2).contiguous().unsqueeze(3)

        # 1. local reverse pass: what each chunk sends into the previous one, a_{first} ⊙ dL/dh_{first}
        carry = u.new_zeros(b, g, cpg, nc, n)
        a = torch.empty_like(carry)
        for j in reversed(range(q)):
            torch.mul(dtq[j].unsqueeze(-1), Ar, out=a).exp_()
            carry.addcmul_(dyq[j].unsqueeze(-1), Cq[j]).mul_(a)
        # 2. gradient entering each chunk from its end (the next chunk, or dlast after the last one)
        g_in = torch.empty_like(carry)
        state = u.new_zeros(b, g, cpg, n) if dlast is None else dlast.reshape(b, g, cpg, n).to(u.dtype)
        for c in reversed(range(nc)):
            g_in[..., c, :] = state
            state = torch.addcmul(carry[..., c, :], decay[..., c, :], state)

        duq, ddtq = torch.empty_like(uq), torch.empty_like(dtq)
        dBq = u.new_empty(q, b, g, nc, n)
        dCq = u.new_empty(q, b, g, nc, n)
        dA = u.new_zeros(g, cpg, n)
        group = max(1, min(nc, _GROUP_BUDGET // max(1, q * b * d * n)))
        for c0 in range(0, nc, group):  # 3. exact reverse pass, a group of chunks at a time
            cs = slice(c0, min(nc, c0 + group))
            hs = u.new_empty(q + 1, b, g, cpg, cs.stop - c0, n)  # h_{j-1} for j = 0..q
            decays = u.new_empty(q, b, g, cpg, cs.stop - c0, n)
            hs[0] = h_in[..., cs, :]
            for j in range(q):
                torch.exp(dtq[j, ..., cs].unsqueeze(-1) * Ar, out=decays[j])
                torch.addcmul(decays[j] * hs[j], dtuq[j, ..., cs].unsqueeze(-1), Bq[j, ..., cs, :], out=hs[j + 1])
            grad = g_in[..., cs, :]
            for j in reversed(range(q)):
                dyj = dyq[j, ..., cs].unsqueeze(-1)
                grad = torch.addcmul(grad, dyj, Cq[j, ..., cs, :])  # dL/dh_t
                dCq[j, ..., cs, :] = torch.sum(dyj * hs[j + 1], dim=2)
                dBq[j, ..., cs, :] = torch.sum(grad * dtuq[j, ..., cs].unsqueeze(-1), dim=2)
                s_b = torch.sum(grad * Bq[j, ..., cs, :], dim=-1)
                glog = grad * hs[j] * decays[j]  # dL/d(dt·A)
                dA += torch.sum(glog * dtq[j, ..., cs].unsqueeze(-1), dim=(0, 3))
                duq[j, ..., cs] = s_b * dtq[j, ..., cs]
                ddtq[j, ..., cs] = s_b * uq[j, ..., cs] + torch.sum(glog * Ar, dim=-1)
                grad = grad * decays[j]

        def back(x: torch.Tensor) -> torch.Tensor:  # (q, b, g, cpg, nc) -> (b, d, l)
            return _from_position(x, length).reshape(b, d, length)

        def back_bc(x: torch.Tensor) -> torch.Tensor:  # (q, b, g, nc, n) -> (b, g, n, l)
            return _from_position(x.transpose(-1, -2), length)

        return back(duq), back(ddtq), dA.reshape(d, n), back_bc(dBq), back_bc(dCq), None


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                           return_last_state=False, chunk_size: int | None = None):
    """Same contract as ``reference.selective_scan_ref``; any device. ``chunk_size`` defaults to ≈√l.

    u, delta, z: (b, d, l); A: (d, n); B, C: (b, n, l) or (b, g, n, l); D, delta_bias: (d,).
    Returns y (b, d, l) in u's dtype [, last state (b, d, n) in float32, or float64 for float64 inputs].
    """
    shape = check_inputs(u, delta, A, B, C, D, z, delta_bias)
    q = chunk_size or default_chunk(shape.l)
    if q < 1:
        raise ValueError(f"chunk_size must be >= 1, got {q}")
    ct = compute_dtype(u)
    uc = u.to(ct)
    dt = prepare_delta(delta.to(ct), delta_bias, delta_softplus)
    Bg, Cg = (as_groups(x, shape.g).to(ct) for x in (B, C))
    y, last = _ChunkedScan.apply(uc, dt, A.to(ct), Bg, Cg, q)
    y = gate(y, uc, D, z).to(u.dtype)
    return (y, last) if return_last_state else y
