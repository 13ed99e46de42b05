"""Analytic peak memory of a speed case: what one timed call needs beyond what was allocated before it.

The estimate is a polynomial in the batch b and length L, stored as five coefficients so that the report can
predict any (b, L), including lengths that ran out of memory or were never run::

    bytes = const + per_seq·b + per_token·b·L + per_length·L + per_token_len·b·L²

Terms (elements x the dtype's size; recurrent states in float32), docs/harness.md §1.7:
- residual stream, norms and logits: 3·d + V per token (fwd); fwdbwd keeps each block's input and normed input
  (2·d per token per block) and the logits, their softmax and gradient (3·V per token);
- each mixer: its Linear outputs (fwd working set) or inputs (saved for the weight gradient in fwdbwd) plus the
  family's own intermediates: attention q/k/v copies and output (6·d), the L² scores, mask and softmax for the
  math/reference attention backends (3·heads per token per L live, 1 saved; the fused SDPA kernels keep O(L)); Mamba's
  conv output, Δ and y (3·d_inner); Mamba-2's conv output, y and gated norm, plus Q x Q intra-chunk blocks and
  per-chunk states for the chunked/minimal backends (the compiled and fused kernels stream them); S4's FFT
  buffers (8·H per token), its kernel and the kernel's FFT (8·H per length; DPLR's Cauchy matrix H·N/2 complex);
- fwd: the largest mixer working set (one layer is live at a time); fwdbwd: every mixer's saved tensors plus the
  largest working set (the backward of one layer) plus a gradient per parameter;
- prefill/decode: the inference cache (KV: 2·d per token per attention layer, for L + the generated tokens;
  recurrent states per sequence) plus the prefill's forward working set.
Parameters and inputs are allocated before the call and are not in the estimate; ``param_bytes`` is stored beside
it, so a memory budget M fits a case when param_bytes + estimate <= M.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from ssmbench.store import Metric

# Kernel backends that materialise per-chunk / per-step intermediates (the others stream them).
_MATERIALISING = ("chunked", "minimal", "reference", "torch")
_ATTENTION_QUADRATIC = ("math", "reference")


@dataclass
class Poly:
    const: float = 0.0
    per_seq: float = 0.0
    per_token: float = 0.0
    per_length: float = 0.0
    per_token_len: float = 0.0

    def __add__(self, o: Poly) -> Poly:
        return Poly(*(getattr(self, f.name) + getattr(o, f.name) for f in fields(self)))

    def scale(self, k: float) -> Poly:
        return Poly(*(getattr(self, f.name) * k for f in fields(self)))

    def max(self, o: Poly) -> Poly:
        return Poly(*(max(getattr(self, f.name), getattr(o, f.name)) for f in fields(self)))

    def at(self, batch: float, seq_len: float) -> float:
        return (self.const + self.per_seq * batch + self.per_token * batch * seq_len + self.per_length * seq_len
                + self.per_token_len * batch * seq_len**2)


def _linears(m: nn.Module) -> tuple[int, int]:
    lin = [x for x in m.modules() if isinstance(x, nn.Linear)]
    return sum(x.in_features for x in lin), sum(x.out_features for x in lin)


def mixer_terms(m: nn.Module, seq_len: int) -> tuple[Poly, Poly, Poly]:
    """(working set, saved for backward, inference state) of one mixer, in elements."""
    name, backend = type(m).__name__, str(getattr(m, "backend", "auto"))
    ins, outs = _linears(m)
    heavy = backend in _MATERIALISING
    if name == "CausalSelfAttention":
        d = m.n_heads * m.head_dim
        quad = float(m.n_heads) if backend in _ATTENTION_QUADRATIC else 0.0  # per head: scores, mask, softmax
        return (Poly(per_token=outs + 6 * d, per_token_len=3 * quad), Poly(per_token=ins + 6 * d, per_token_len=quad),
                Poly(per_token=2 * d))
    if name == "MambaMixer":
        extra = 3 * m.d_inner + (2 * m.d_inner * m.d_state if heavy else 0)
        state = Poly(per_seq=m.d_inner * (m.d_state + m.d_conv))
        return Poly(per_token=outs + extra), Poly(per_token=ins + extra), state
    if name == "Mamba2Mixer":
        q = min(m.chunk_size or 64, max(1, seq_len))
        extra = m.conv_dim + 2 * m.d_inner
        if heavy:  # intra-chunk C·Bᵀ and decay blocks, and one state per chunk
            extra += 2 * m.nheads * q + m.nheads * m.headdim * m.d_state / q
        state = Poly(per_seq=m.nheads * m.headdim * m.d_state + m.conv_dim * m.d_conv)
        return Poly(per_token=outs + extra), Poly(per_token=ins + extra), state
    if name == "S4Layer":
        h, n2 = m.d_model, m.d_state // 2
        kernel = Poly(per_length=8.0 * h + (2.0 * h * n2 if m.mode == "dplr" else 0.0))  # k, its FFT; Cauchy
        work = Poly(per_token=outs + 8 * h) + kernel
        return work, Poly(per_token=ins + 8 * h) + kernel, Poly(per_seq=2 * h * n2)
    # MLP and anything else: Linear outputs plus one activation of the widest layer
    widest = max((x.out_features for x in m.modules() if isinstance(x, nn.Linear)), default=0)
    return Poly(per_token=outs + widest), Poly(per_token=ins + widest), Poly()


def estimate(model: nn.Module, mode: str, dtype: torch.dtype, seq_len: int, decode_tokens: int = 0) -> Poly:
    """The analytic peak memory (bytes) of one timed call of ``mode`` beyond what was allocated before it."""
    size = torch.empty((), dtype=dtype).element_size()
    d, vocab = model.embedding.embedding_dim, model.head.out_features
    mixers = [block.mixer for block in model.blocks]
    terms = [mixer_terms(m, seq_len) for m in mixers]
    work = Poly()
    for w, _, _ in terms:
        work = work.max(w)
    if mode == "fwdbwd":
        saved = Poly(per_token=(2 * d) * len(mixers) + 3 * vocab + d)
        for _, s, _ in terms:
            saved = saved + s
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        return (saved + work).scale(size) + Poly(const=params)
    body = (Poly(per_token=3 * d + vocab) + work).scale(size)
    if mode in ("prefill", "decode"):
        cache = Poly()
        for _, _, c in terms:
            cache = cache + c
        kv = Poly(per_seq=cache.per_token * decode_tokens * size)  # the generated tokens' KV entries
        return body + Poly(per_token=cache.per_token * size) + kv + Poly(per_seq=cache.per_seq * 4)
    return body


def estimate_metrics(model: nn.Module, mode: str, dtype: torch.dtype, batch: int, seq_len: int,
                     decode_tokens: int = 0) -> list[Metric]:
    """The estimate's value at this case and its coefficients (for predictions at other lengths), and the
    parameters' bytes (allocated before the call, so not in the estimate)."""
    poly = estimate(model, mode, dtype, seq_len, decode_tokens)
    out = [Metric("peak_mem_est", "value", poly.at(batch, seq_len), "B"),
           Metric("param_bytes", "value", sum(p.numel() * p.element_size() for p in model.parameters()), "B")]
    return out + [Metric("peak_mem_est", f.name, getattr(poly, f.name), "B") for f in fields(poly)]


def case_estimate_metrics(case) -> list[Metric]:
    """The estimate for a case whose run failed (out of memory): its model built on the meta device (no memory)."""
    from ssmbench.models import make_config

    if case.kind != "speed":
        return []
    from ssmbench.models.blocks import DTYPES

    config = make_config(case.model, backend=case.backend, d_model=case.d_model, n_layers=case.n_layers,
                         vocab_size=case.vocab_size, options=dict(case.model_options))
    with torch.device("meta"):
        model = config.build().to(dtype=DTYPES[case.dtype])
    return estimate_metrics(model, case.mode, DTYPES[case.dtype], case.batch, case.seq_len,
                            int(case.option("decode_tokens", 0) or 0))
