"""Shared model pieces: RMSNorm, the pre-norm residual block, and SequenceModel.

Every family builds a ``SequenceModel``: embedding -> N pre-norm residual blocks -> norm -> LM head.
A block wraps a *mixer*: any module with

    forward(x: (b, l, d_model)) -> (b, l, d_model)                  # parallel (training/prefill) path
    allocate_inference_cache(batch, max_len, dtype) -> dict | None  # preallocated decode state
    step(x: (b, d_model), cache) -> (b, d_model)                    # one decode step; updates cache in place

Mixers that need the position of the current token (attention) keep it in their cache.
``SequenceModel.step`` runs one token through every block; the decode output equals the parallel forward at
that position (tested per family in float64).

Optional inference protocol (driven by ``ssmbench/models/inference.py``; tests/models/test_decode_all.py checks it):

    prefill(x: (b, l, d_model), cache) -> (b, l, d_model)
        the parallel forward that also leaves ``cache`` (fresh from allocate_inference_cache, or rewound to
        empty) exactly as l calls of ``step`` would: attention writes its KV cache for positions [0, l), Mamba
        the last d_conv conv inputs and the scan's final state (return_last_state), SSD the final states
        (return_final_states), S4 its final recurrent state. A mixer without it is prefilled by calling ``step``
        token by token — correct but slow for long l; the path taken is recorded ("native" | "step_loop").
    static_cache(cache) -> None
        switch ``cache`` to a CUDA-graph-safe step: no host-side state that changes per token, no
        data-dependent shapes (attention: a device position and a mask over the whole buffer). Recurrent steps
        that only update fixed-size tensors in place are graph-safe already and need no such method.

A cache is a (nested) dict/list of tensors and Python scalars. Buffers whose size grows with ``max_len`` (a KV
cache) must be append-only — a step writes position t before reading it — so a benchmark rewinds a cache by
restoring its fixed-size tensors and scalars only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ssmbench.models.configs import ModelConfig  # noqa: F401 - re-exported: family configs subclass it

# dtype names accepted by --dtype -> torch dtypes
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in at least float32 so bf16 activations don't lose the mean square.
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return out.to(x.dtype) * self.weight


class MLP(nn.Module):
    """Two-layer GELU MLP (the transformer's channel mixer); stateless at decode."""

    def __init__(self, d_model: int, expand: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, expand * d_model, bias=False)
        self.fc2 = nn.Linear(expand * d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(x)))

    def allocate_inference_cache(self, batch: int, max_len: int, dtype: torch.dtype) -> None:
        return None

    def step(self, x: torch.Tensor, cache: None) -> torch.Tensor:
        return self.forward(x)


class ResidualBlock(nn.Module):
    """x + mixer(norm(x)) (pre-norm)."""

    def __init__(self, d_model: int, mixer: nn.Module) -> None:
        super().__init__()
        self.norm = RMSNorm(d_model)
        self.mixer = mixer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mixer(self.norm(x))

    def step(self, x: torch.Tensor, cache: Any) -> torch.Tensor:
        return x + self.mixer.step(self.norm(x), cache)


def tensor_bytes(obj: Any) -> int:
    """Total bytes of the tensors inside a (nested) cache."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


class SequenceModel(nn.Module):
    """Embedding -> residual blocks -> RMSNorm -> LM head (tied to nothing; sizes are reported as params)."""

    def __init__(self, vocab_size: int, d_model: int, mixers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(ResidualBlock(d_model, m) for m in mixers)
        self.norm = RMSNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final normalised hidden states (b, l, d_model), before the head."""
        x = self.embedding(tokens)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(tokens))

    def allocate_inference_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> list[Any]:
        dtype = dtype or self.embedding.weight.dtype
        return [b.mixer.allocate_inference_cache(batch, max_len, dtype) for b in self.blocks]

    def step(self, token: torch.Tensor, cache: list[Any]) -> torch.Tensor:
        """token: (b,) -> logits (b, vocab)."""
        x = self.embedding(token)
        for block, c in zip(self.blocks, cache, strict=True):
            x = block.step(x, c)
        return self.head(self.norm(x))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def interleave(n_layers: int, make_mixer: Callable[[int], nn.Module],
               make_mlp: Callable[[int], nn.Module] | None = None) -> list[nn.Module]:
    """Mixer list for n_layers layers; with ``make_mlp`` each layer is (mixer, mlp) as in a transformer."""
    mixers: list[nn.Module] = []
    for i in range(n_layers):
        mixers.append(make_mixer(i))
        if make_mlp is not None:
            mixers.append(make_mlp(i))
    return mixers
