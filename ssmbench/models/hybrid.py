"""Hybrid: Mamba-2 layers with an attention layer every ``attn_every``-th layer (layers attn_every-1,
2·attn_every-1, …: 3, 7, … for the default 4, i.e. one attention layer per three Mamba-2 layers).

A Mamba-2 layer is one pre-norm residual block around ``Mamba2Mixer`` (no MLP, as in Mamba). An attention layer
is a transformer layer: ``CausalSelfAttention`` then, unless ``mlp_expand`` is 0, a GELU ``MLP``, each in its own
pre-norm residual block. A model with fewer layers than ``attn_every`` gets a single attention layer in the
middle (index n_layers // 2), so a 2-layer hybrid is Mamba-2 then attention; a 1-layer one (sweeps may set
n_layers=1 for every family) is a lone attention layer, there being no room for a Mamba-2 layer.
``backend`` selects the SSD kernel, ``attn_backend`` the attention kernel. Decode keeps the Mamba-2 conv/SSM
states and a KV cache for the attention layers.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ssmbench.models.blocks import MLP, ModelConfig, SequenceModel
from ssmbench.models.mamba2 import Mamba2Mixer, resolve_headdim
from ssmbench.models.transformer import CausalSelfAttention


def attention_layers(n_layers: int, attn_every: int) -> tuple[int, ...]:
    """Indices of the attention layers among ``n_layers`` (see the module docstring)."""
    if n_layers < attn_every:
        return (n_layers // 2,)
    return tuple(range(attn_every - 1, n_layers, attn_every))


@dataclass(frozen=True)
class HybridConfig(ModelConfig):
    d_model: int = 256
    n_layers: int = 4
    vocab_size: int = 256
    backend: str = "auto"  # ssd backend of the Mamba-2 layers
    attn_backend: str = "auto"  # attention backend: sdpa, math, flash, efficient, cudnn, flash_attn, reference
    attn_every: int = 4  # every attn_every-th layer is attention
    attn_head_dim: int = 64  # attention heads of this size (n_heads = d_model // attn_head_dim, at least 1)
    mlp_expand: int = 4  # MLP after each attention layer; 0 = none
    rope: bool = True
    d_state: int = 64  # Mamba-2 fields, as in Mamba2Config
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    chunk_size: int | None = None  # None = per device (see Mamba2Config)

    def __post_init__(self) -> None:
        if self.attn_every < 2:
            raise ValueError(f"attn_every must be >= 2 (1 would be all attention), got {self.attn_every}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by attention heads={self.n_heads}")
        resolve_headdim(self.expand * self.d_model, self.headdim, self.ngroups)

    @property
    def n_heads(self) -> int:
        return max(1, self.d_model // self.attn_head_dim)

    @property
    def attention_layers(self) -> tuple[int, ...]:
        return attention_layers(self.n_layers, self.attn_every)

    def build(self) -> SequenceModel:
        mixers: list[nn.Module] = []
        attn = set(self.attention_layers)
        for i in range(self.n_layers):
            if i in attn:
                mixers.append(CausalSelfAttention(self.d_model, self.n_heads, self.attn_backend, self.rope))
                if self.mlp_expand:
                    mixers.append(MLP(self.d_model, self.mlp_expand))
            else:
                mixers.append(Mamba2Mixer(self.d_model, self.d_state, self.d_conv, self.expand, self.headdim,
                                          self.ngroups, self.chunk_size, self.backend))
        return SequenceModel(self.vocab_size, self.d_model, mixers)
