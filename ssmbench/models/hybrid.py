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

from torch import nn

from ssmbench.models.blocks import MLP, SequenceModel
from ssmbench.models.configs import HybridConfig, attention_layers  # noqa: F401 - re-exported
from ssmbench.models.mamba2 import Mamba2Mixer
from ssmbench.models.transformer import CausalSelfAttention


def build(config: HybridConfig) -> SequenceModel:
    mixers: list[nn.Module] = []
    attn = set(config.attention_layers)
    for i in range(config.n_layers):
        if i in attn:
            mixers.append(CausalSelfAttention(config.d_model, config.n_heads, config.attn_backend, config.rope))
            if config.mlp_expand:
                mixers.append(MLP(config.d_model, config.mlp_expand))
        else:
            mixers.append(Mamba2Mixer(config.d_model, config.d_state, config.d_conv, config.expand, config.headdim,
                                      config.ngroups, config.chunk_size, config.backend))
    return SequenceModel(config.vocab_size, config.d_model, mixers)
