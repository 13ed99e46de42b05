"""Analytic FLOPs of a model forward, stored beside its time so achieved FLOP/s can be compared across families.

Conventions (docs/kernels.md §5.2, harness.md §1.6): a multiply-add is 2 FLOPs; every ``nn.Linear`` costs
2·tokens·in·out; sequence mixing adds
- causal attention: 2·b·L²·d_model per layer (QKᵀ and AV, each 2·b·h·L²·d_head, halved by the causal mask);
- Mamba-1 selective scan: 9·b·D·L·N (Δ·A, Δu·B, the combine, C·h);
- Mamba-2 SSD: 2·L·Q·N·G (C·Bᵀ per group) + 2·L·Q·P·H (intra-chunk, full Q×Q blocks as the chunked path
  computes them) + 4·L·N·P·H (chunk states and state → output), per sequence;
- S4 FFT convolution: three real FFTs of length 2L per channel at 2.5·n·log2(n) each, plus the pointwise
  product, plus the kernel generation (≈ 8·H·(N/2)·L real FLOPs for S4D's Vandermonde; the DPLR Cauchy kernel
  ≈ 16·H·(N/2)·L).
Elementwise work (norms, activations, the LM head's softmax) is not counted. Forward+backward = 3 × forward.
"""

from __future__ import annotations

import math

from torch import nn


def _attention_flops(batch: int, seq_len: int, d_model: int) -> float:
    return 2.0 * batch * seq_len**2 * d_model


def _mixing_flops(mixer: nn.Module, batch: int, seq_len: int) -> float:
    """FLOPs of one mixer's sequence mixing (everything but its Linear layers)."""
    name = type(mixer).__name__
    if name == "CausalSelfAttention":
        return _attention_flops(batch, seq_len, mixer.n_heads * mixer.head_dim)
    if name == "MambaMixer":
        return 9.0 * batch * mixer.d_inner * seq_len * mixer.d_state
    if name == "Mamba2Mixer":
        chunk = mixer.chunk_size or 64
        q = min(chunk, seq_len)
        n, p, h, g = mixer.d_state, mixer.headdim, mixer.nheads, mixer.ngroups
        return batch * (2.0 * seq_len * q * n * g + 2.0 * seq_len * q * p * h + 4.0 * seq_len * n * p * h)
    if name == "S4Layer":
        n_fft = 2 * seq_len
        fft = 2.5 * n_fft * math.log2(max(2, n_fft))
        conv = batch * mixer.d_model * (2 * fft + 6 * n_fft) + mixer.d_model * fft  # u, y FFTs per batch; kernel once
        per_pair = 16.0 if mixer.mode == "dplr" else 8.0
        return conv + per_pair * mixer.d_model * (mixer.d_state // 2) * seq_len
    return 0.0


def forward_flops(model: nn.Module, batch: int, seq_len: int) -> float:
    """Analytic FLOPs of ``model(tokens)`` for tokens of shape (batch, seq_len)."""
    tokens = batch * seq_len
    linear = sum(2.0 * tokens * m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    blocks = getattr(model, "blocks", [])
    return linear + sum(_mixing_flops(block.mixer, batch, seq_len) for block in blocks)


def case_flops(model: nn.Module, batch: int, seq_len: int, mode: str) -> float:
    """FLOPs of one timed call of a speed case: forward, or forward + backward (3 × forward)."""
    fwd = forward_flops(model, batch, seq_len)
    return 3.0 * fwd if mode == "fwdbwd" else fwd


# ------------------------------------------------------------------------------------------------ bytes moved
# The roofline's denominator: the bytes a call must move between memory and the compute units at the least, in a
# kernel-per-op execution (each op reads its inputs and writes its output once; nothing stays in cache between
# ops): docs/harness.md §1.6. Elements x the dtype's size.


def _mixing_bytes_elems(mixer: nn.Module, batch: int, seq_len: int) -> float:
    """Elements one mixer's sequence mixing moves (everything but its Linear layers), inputs and outputs."""
    name, tokens = type(mixer).__name__, batch * seq_len
    if name == "CausalSelfAttention":
        d = mixer.n_heads * mixer.head_dim
        # q, k, v in and the output out; the math/reference backends also write and read back the L² scores and
        # their softmax (fused kernels keep them on chip)
        quad = 4.0 * batch * mixer.n_heads * seq_len**2 if getattr(mixer, "backend", "") in ("math", "reference") \
            else 0.0
        return 4.0 * tokens * d + quad
    if name == "MambaMixer":
        di, n = mixer.d_inner, mixer.d_state
        # conv: x in, out; scan: x, Δ, z, B, C in, y out (the state stays on chip)
        return tokens * (2.0 * di + 4.0 * di + 2.0 * n) + 2.0 * batch * di * n
    if name == "Mamba2Mixer":
        di, g, n, h = mixer.d_inner, mixer.ngroups, mixer.d_state, mixer.nheads
        chunks = math.ceil(seq_len / (mixer.chunk_size or 64))
        # conv over x, B, C in and out; SSD: x, B, C, dt, z in, y out; one state per chunk written and read
        return tokens * (2.0 * mixer.conv_dim + 3.0 * di + 2.0 * g * n + h) + 2.0 * batch * chunks * h * \
            mixer.headdim * n
    if name == "S4Layer":
        h = mixer.d_model
        # three FFT passes of 2L per channel (u in, spectra, y out), the kernel and its spectrum once
        return batch * h * 2 * seq_len * 2 * 3.0 + h * 2 * seq_len * 2 * 2.0
    return 0.0


def forward_bytes(model: nn.Module, batch: int, seq_len: int, element_size: int = 4) -> float:
    """Analytic bytes moved by ``model(tokens)``: every Linear's weight, input and output; each mixer's sequence
    mixing; the residual stream's norms and adds (read and write d_model per token each)."""
    tokens = batch * seq_len
    linear = sum(m.in_features * m.out_features + tokens * (m.in_features + m.out_features)
                 for m in model.modules() if isinstance(m, nn.Linear))
    blocks = getattr(model, "blocks", [])
    d = getattr(getattr(model, "embedding", None), "embedding_dim", 0)
    residual = tokens * d * (2.0 + 5.0 * len(blocks))  # embedding out, final norm; per block: norm + add
    mixing = sum(_mixing_bytes_elems(block.mixer, batch, seq_len) for block in blocks)
    return element_size * (linear + residual + mixing)


def case_bytes(model: nn.Module, batch: int, seq_len: int, mode: str, element_size: int = 4) -> float:
    """Bytes of one timed call of a speed case: forward, or forward + backward (3 x forward, as for FLOPs)."""
    fwd = forward_bytes(model, batch, seq_len, element_size)
    return 3.0 * fwd if mode == "fwdbwd" else fwd
