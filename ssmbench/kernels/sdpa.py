"""Causal attention over torch SDPA with an explicit backend, plus a flash_attn adapter.

Layout (b, h, l, d). SDPA's ``is_causal`` is top-left aligned; decode against a KV cache uses
``causal=False`` with one query (see models/transformer.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ssmbench.kernels._tables import ATTENTION_BACKENDS as BACKENDS  # noqa: F401 - the op's table


def attention_sdpa(q, k, v, causal=True):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def _forced(backend_name: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    sdp_backend = getattr(SDPBackend, backend_name)

    def run(q, k, v, causal=True):
        with sdpa_kernel([sdp_backend]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    return run


attention_flash = _forced("FLASH_ATTENTION")
attention_cudnn = _forced("CUDNN_ATTENTION")
attention_efficient = _forced("EFFICIENT_ATTENTION")
attention_math = _forced("MATH")


def attention_ref(q, k, v, causal=True):
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        lq, lk = q.shape[-2], k.shape[-2]
        mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


def probe_cudnn() -> str | None:
    from torch.nn.attention import SDPBackend

    return None if hasattr(SDPBackend, "CUDNN_ATTENTION") else "this torch has no cuDNN SDPA backend"


def probe_flash_attn() -> str | None:
    try:
        import flash_attn  # noqa: F401
    except ImportError as exc:
        return f"pip install flash-attn ({exc})"
    return None


def attention_flash_attn(q, k, v, causal=True):
    from flash_attn import flash_attn_func

    # flash_attn wants (b, l, h, d); with lq == lk its bottom-right causal alignment equals SDPA's.
    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal)
    return out.transpose(1, 2)
