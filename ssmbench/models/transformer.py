"""Causal multi-head attention transformer (pre-norm, RoPE rotate-half, GELU MLP 4x) with a KV cache.

Attention runs through ``ssmbench.kernels.attention`` so the SDPA backend is an explicit, recorded choice.
Decode: the KV cache is preallocated (b, h, max_len, head_dim); a step writes position t and attends over
[:t+1] with ``causal=False`` (a single query sees every cached key). ``prefill`` runs the parallel forward and
writes k/v for the whole prompt. ``static_cache`` switches a cache to a CUDA-graph-safe step: the position lives
in a device tensor and the query attends over the whole buffer with a mask of the written positions (SDPA with
``attn_mask``, since the backend-forcing wrappers take no mask) — the same result, static shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench import kernels
from ssmbench.models.blocks import MLP, SequenceModel, interleave
from ssmbench.models.configs import TransformerConfig


def rope_cos_sin(positions: torch.Tensor, head_dim: int, base: float = 10000.0,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (len(positions), head_dim) for the rotate-half (GPT-NeoX) layout."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float64) / head_dim)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (..., l, head_dim); pairs (i, i + head_dim/2) rotate by angle pos * theta_i."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, backend: str = "auto", rope: bool = True) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.backend, self.rope = backend, rope
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self._rope_key: tuple | None = None
        self._rope_table: tuple[torch.Tensor, torch.Tensor] | None = None

    def _rope(self, length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The (length, head_dim) cos and sin tables, kept while length, device and dtype stay the same (as
        production implementations cache them). Recomputed inside a compiled forward, inductor fuses the table into
        the rotation and evaluates cos and sin once per element of q and k instead of once per (position, frequency):
        the compiled transformer forward at L = 1k was 15% slower than eager for that alone (a compiled case runs
        once eagerly first, which fills the cache). Built eagerly outside inference mode and autograd, so one table
        serves inference and training; never from inside a trace, where dynamo ignores ``inference_mode(False)``.
        No ``torch.compiler.disable`` here: it imports dynamo on the eager path, inside a case's memory cap."""
        key = (length, device, dtype)
        if self._rope_key == key and self._rope_table is not None:
            return self._rope_table
        positions = torch.arange(length, device=device)
        if torch.compiler.is_compiling():  # a cold cache met while tracing: computed in the graph and not kept,
            return rope_cos_sin(positions, self.head_dim, dtype=dtype)  # since it could be an inference tensor
        with torch.inference_mode(False), torch.no_grad():
            self._rope_table = rope_cos_sin(positions, self.head_dim, dtype=dtype)
        self._rope_key = key
        return self._rope_table

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, length, _ = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]  # each (b, h, l, head_dim)

    def _attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (b, l, d) -> output (b, l, d) and the rotated keys and values (b, h, l, head_dim)."""
        b, length, d = x.shape
        q, k, v = self._split(x)
        if self.rope:
            cos, sin = self._rope(length, x.device, q.dtype)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = kernels.attention(q, k, v, causal=True, backend=self.backend)
        return self.out(y.transpose(1, 2).reshape(b, length, d)), k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._attend(x)[0]

    def allocate_inference_cache(self, batch: int, max_len: int, dtype: torch.dtype) -> dict:
        """k, v (b, h, max_len, head_dim); "pos" the host position; "pos_t" (1,) its device copy for static mode."""
        device = self.qkv.weight.device
        shape = (batch, self.n_heads, max_len, self.head_dim)
        k, v = torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)
        return {"k": k, "v": v, "pos": 0, "pos_t": torch.zeros(1, dtype=torch.long, device=device), "static": False}

    def prefill(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        """Parallel forward over a prompt x (b, l, d) that also writes k/v of positions [0, l) into an empty cache."""
        length = x.shape[1]
        if cache["pos"] != 0:
            raise ValueError(f"prefill needs an empty KV cache (position 0, got {cache['pos']})")
        if length > cache["k"].shape[2]:
            raise RuntimeError(f"prompt of {length} tokens does not fit a KV cache of {cache['k'].shape[2]}")
        y, k, v = self._attend(x)
        cache["k"][:, :, :length] = k
        cache["v"][:, :, :length] = v
        cache["pos"] = length
        cache["pos_t"].fill_(length)
        return y

    def static_cache(self, cache: dict) -> None:
        """From now on step reads and advances the device position "pos_t" only (CUDA-graph-safe)."""
        cache["pos_t"].fill_(cache["pos"])
        cache["static"] = True

    def _step_static(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        # No host reads of the position and no shapes that depend on it, so the step can be captured once and
        # replayed; the caller sizes max_len (an index past the buffer would be a device-side error).
        b, d = x.shape
        pos = cache["pos_t"]
        q, k, v = self._split(x[:, None, :])
        if self.rope:
            cos, sin = rope_cos_sin(pos, self.head_dim, dtype=q.dtype)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        cache["k"].index_copy_(2, pos, k)
        cache["v"].index_copy_(2, pos, v)
        written = (torch.arange(cache["k"].shape[2], device=x.device) <= pos)[None]  # (1, max_len): keys 0..pos
        y = F.scaled_dot_product_attention(q, cache["k"], cache["v"], attn_mask=written)
        pos.add_(1)
        return self.out(y.reshape(b, d))

    def step(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        if cache.get("static"):
            return self._step_static(x, cache)
        b, d = x.shape
        pos = cache["pos"]
        if pos >= cache["k"].shape[2]:
            raise RuntimeError(f"KV cache full at {pos} tokens; allocate a larger max_len")
        q, k, v = self._split(x[:, None, :])
        if self.rope:
            cos, sin = rope_cos_sin(torch.tensor([pos], device=x.device), self.head_dim, dtype=q.dtype)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        cache["k"][:, :, pos:pos + 1] = k
        cache["v"][:, :, pos:pos + 1] = v
        cache["pos"] = pos + 1
        y = kernels.attention(q, cache["k"][:, :, :pos + 1], cache["v"][:, :, :pos + 1], causal=False,
                              backend=self.backend)
        return self.out(y.reshape(b, d))


def build(config: TransformerConfig) -> SequenceModel:
    mlp = (lambda i: MLP(config.d_model, config.mlp_expand)) if config.mlp_expand else None
    mixers = interleave(config.n_layers, lambda i: CausalSelfAttention(config.d_model, config.n_heads, config.backend,
                                                                       config.rope), mlp)
    return SequenceModel(config.vocab_size, config.d_model, mixers)
