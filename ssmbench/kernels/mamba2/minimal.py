"""The Mamba-2 paper's minimal SSD (Listing 1, ``ssd_minimal_discrete``) as a backend: the peer to beat.

Written after the listing, op for op: chunks of Q tokens; (1) the diagonal blocks as one 4-operand einsum
C·B·L·X with L = exp(segsum(A)) from a difference of cumulative sums masked with -inf; (2) the chunk states;
(3) the inter-chunk recurrence as a (c+1) x (c+1) decay matrix applied to every state at once; (4) the state
to output conversion. B and C are expanded to one copy per head, as the listing takes them. What the listing
leaves to its caller is done here: x·dt and A·dt, padding L to whole chunks (dt = 0 on the padding, an identity
step), D and the z gate. It runs on any device and differentiates through plain autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssmbench.kernels.mamba2.reference import apply_skip_and_gate, check_ssd_inputs, compute_dtype, process_dt


def segsum(a: torch.Tensor) -> torch.Tensor:
    """a: (..., T) -> (..., T, T): cumsum(a)_i - cumsum(a)_j below and on the diagonal, -inf above (as listed)."""
    T = a.shape[-1]
    cs = torch.cumsum(a, dim=-1)
    out = cs[..., :, None] - cs[..., None, :]
    mask = torch.tril(torch.ones(T, T, device=a.device, dtype=torch.bool))
    return out.masked_fill(~mask, -torch.inf)


def ssd_minimal_discrete(X, A, B, C, block_len: int, initial_states=None):
    """X: (b, l, h, p); A: (b, l, h); B, C: (b, l, h, n); l a multiple of block_len. Returns Y, final state."""
    b, length, h, p = X.shape
    n = B.shape[-1]
    c = length // block_len
    X = X.reshape(b, c, block_len, h, p)
    B = B.reshape(b, c, block_len, h, n)
    C = C.reshape(b, c, block_len, h, n)
    A = A.reshape(b, c, block_len, h).permute(0, 3, 1, 2)  # b h c l
    A_cumsum = torch.cumsum(A, dim=-1)
    # 1. intra-chunk outputs (diagonal blocks)
    L = torch.exp(segsum(A))
    Y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", C, B, L, X)
    # 2. states at the end of each chunk
    decay_states = torch.exp(A_cumsum[:, :, :, -1:] - A_cumsum)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", B, decay_states, X)
    # 3. inter-chunk recurrence
    if initial_states is None:
        initial_states = torch.zeros_like(states[:, :1])
    states = torch.cat([initial_states, states], dim=1)
    decay_chunk = torch.exp(segsum(F.pad(A_cumsum[:, :, :, -1], (1, 0))))
    new_states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
    states, final_state = new_states[:, :-1], new_states[:, -1]
    # 4. state -> output per chunk
    state_decay_out = torch.exp(A_cumsum)
    Y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", C, states, state_decay_out)
    return (Y_diag + Y_off).reshape(b, c * block_len, h, p), final_state


def ssd_minimal(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False,
                initial_states=None, return_final_states=False):
    """The listing behind the ``ssd`` signature. Returns y (b, l, h, p) [, final_states (b, h, p, n)]."""
    _, length, h, _, g, _ = check_ssd_inputs(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states)
    Q = int(chunk_size)
    ct = compute_dtype(x)
    dtc = process_dt(dt, dt_bias, dt_softplus, ct)
    pad = -length % Q
    X = F.pad(x.to(ct) * dtc[..., None], (0, 0, 0, 0, 0, pad))
    Adt = F.pad(dtc * A.to(ct), (0, 0, 0, pad))
    Bh, Ch = (F.pad(t.to(ct).repeat_interleave(h // g, dim=2), (0, 0, 0, 0, 0, pad)) for t in (B, C))
    S0 = None if initial_states is None else initial_states.to(ct)[:, None]
    y, final = ssd_minimal_discrete(X, Adt, Bh, Ch, Q, S0)
    y = apply_skip_and_gate(y[:, :length], x.to(ct), D, z).to(x.dtype)
    return (y, final) if return_final_states else y
