"""The family configs: sizes, validation and analytic parameter counts, importable without torch.

``ssmbench models`` lists every family's parameter count; importing torch alone takes longer than the listing's
budget (< 1 s), so the configs live here, torch-free, and count parameters from their sizes
(:meth:`ModelConfig.param_count`, checked against the built models in tests/models/test_configs.py).
``build()`` imports the family module and calls its build function (``BUILDER``); the family modules
re-export their config class, so ``from ssmbench.models.mamba import MambaConfig`` keeps working.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, ClassVar


class ModelConfig:
    """Fields every family config has (each family is a frozen dataclass with these plus its own).

    d_model, n_layers, vocab_size: the SequenceModel frame; backend: the kernel backend of the family's
    main op ("auto" = fastest available for the device). ``state_dim`` is the d_state recorded in results.
    """

    BUILDER: ClassVar[str] = ""  # "module:function" of the family's build(config) -> SequenceModel
    d_model: int
    n_layers: int
    vocab_size: int
    backend: str

    @property
    def state_dim(self) -> int | None:
        return getattr(self, "d_state", None)

    def build(self) -> Any:
        """The SequenceModel (imports torch and the family module)."""
        if not self.BUILDER:  # pragma: no cover - a config outside this module overrides build()
            raise NotImplementedError(type(self).__name__)
        module, _, function = self.BUILDER.partition(":")
        return getattr(importlib.import_module(module), function)(self)

    def mixer_params(self) -> list[int]:
        """Parameters of each mixer, in block order (each mixer sits in a pre-norm block)."""
        raise NotImplementedError(type(self).__name__)

    def param_count(self) -> int:
        """Parameters of the built model, from the sizes alone: embedding + head (vocab x d each), the final
        norm, and per block its norm plus its mixer."""
        d = self.d_model
        return 2 * self.vocab_size * d + d + sum(d + p for p in self.mixer_params())


def attention_params(d_model: int) -> int:
    return 4 * d_model * d_model  # qkv (d -> 3d) and out (d -> d), no biases


def mlp_params(d_model: int, expand: int) -> int:
    return 2 * expand * d_model * d_model  # fc1, fc2, no biases


@dataclass(frozen=True)
class TransformerConfig(ModelConfig):
    BUILDER: ClassVar[str] = "ssmbench.models.transformer:build"
    d_model: int = 256
    n_layers: int = 2
    vocab_size: int = 256
    backend: str = "auto"  # attention backend: sdpa, math, flash, efficient, cudnn, flash_attn, reference
    head_dim: int = 64  # heads of 64 (n_heads = d_model // head_dim)
    mlp_expand: int = 4  # MLP width multiple; 0 = attention-only layers (Zoology's MQAR setting)
    rope: bool = True

    @property
    def n_heads(self) -> int:
        return max(1, self.d_model // self.head_dim)

    def mixer_params(self) -> list[int]:
        layer = [attention_params(self.d_model)]
        if self.mlp_expand:
            layer.append(mlp_params(self.d_model, self.mlp_expand))
        return layer * self.n_layers


@dataclass(frozen=True)
class MambaConfig(ModelConfig):
    BUILDER: ClassVar[str] = "ssmbench.models.mamba:build"
    d_model: int = 256
    n_layers: int = 2
    vocab_size: int = 256
    backend: str = "auto"  # selective_scan backend
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None  # None = ceil(d_model / 16)

    def mixer_params(self) -> list[int]:
        d, n, di = self.d_model, self.d_state, self.expand * self.d_model
        r = self.dt_rank or math.ceil(d / 16)
        # in_proj, conv weight + bias, x_proj, dt_proj (+ bias), A_log, D, out_proj
        return [2 * di * d + di * (self.d_conv + 1) + di * (r + 2 * n) + (r + 1) * di + di * n + di + di * d
                ] * self.n_layers


def resolve_headdim(d_inner: int, headdim: int, ngroups: int) -> int:
    """Head dim actually used: ``headdim``, shrunk to d_inner for small models; ValueError when no split works."""
    p = min(headdim, d_inner)
    if d_inner % p:
        raise ValueError(f"d_inner={d_inner} (expand x d_model) must be a multiple of headdim={p}")
    if (d_inner // p) % ngroups:
        raise ValueError(f"nheads={d_inner // p} (d_inner / headdim) must be divisible by ngroups={ngroups}")
    return p


def mamba2_mixer_params(d_model: int, d_state: int, d_conv: int, expand: int, headdim: int, ngroups: int) -> int:
    di = expand * d_model
    heads = di // resolve_headdim(di, headdim, ngroups)
    conv_dim = di + 2 * ngroups * d_state
    # in_proj (z, xBC, dt), conv weight + bias, dt_bias, A_log, D, gated norm, out_proj
    return d_model * (di + conv_dim + heads) + conv_dim * (d_conv + 1) + 3 * heads + di + di * d_model


@dataclass(frozen=True)
class Mamba2Config(ModelConfig):
    BUILDER: ClassVar[str] = "ssmbench.models.mamba2:build"
    d_model: int = 256
    n_layers: int = 2
    vocab_size: int = 256
    backend: str = "auto"  # ssd backend: chunked, triton, mamba_ssm, fla, reference
    d_state: int = 64  # N
    d_conv: int = 4
    expand: int = 2  # d_inner = expand * d_model
    headdim: int = 64  # P; shrinks to d_inner for models narrower than one head
    ngroups: int = 1  # G groups of B/C shared by nheads / G heads
    chunk_size: int | None = None  # SSD chunk Q; None = per device (256 on CUDA as upstream, 64 on CPU)

    def __post_init__(self) -> None:
        resolve_headdim(self.expand * self.d_model, self.headdim, self.ngroups)  # fail at config time, clearly

    def mixer_params(self) -> list[int]:
        return [mamba2_mixer_params(self.d_model, self.d_state, self.d_conv, self.expand, self.headdim,
                                    self.ngroups)] * self.n_layers


def attention_layers(n_layers: int, attn_every: int) -> tuple[int, ...]:
    """Indices of a hybrid's attention layers among ``n_layers`` (see ``ssmbench/models/hybrid.py``)."""
    if n_layers < attn_every:
        return (n_layers // 2,)
    return tuple(range(attn_every - 1, n_layers, attn_every))


@dataclass(frozen=True)
class HybridConfig(ModelConfig):
    BUILDER: ClassVar[str] = "ssmbench.models.hybrid:build"
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

    def mixer_params(self) -> list[int]:
        attn, out = set(self.attention_layers), []
        ssd = mamba2_mixer_params(self.d_model, self.d_state, self.d_conv, self.expand, self.headdim, self.ngroups)
        for i in range(self.n_layers):
            if i not in attn:
                out.append(ssd)
                continue
            out.append(attention_params(self.d_model))
            if self.mlp_expand:
                out.append(mlp_params(self.d_model, self.mlp_expand))
        return out


def check_s4(d_state: int, dt_min: float, dt_max: float, backend: str, wrong: tuple[str, ...]) -> None:
    if backend in wrong:
        raise ValueError(f"s4_kernel backend '{backend}' computes the other S4 variant's kernel; use 'auto', "
                         "'vandermonde' (S4D), 'cauchy_compiled' / 'cauchy' / 'cauchy_naive' (S4-DPLR) or 'reference'")
    if d_state < 2 or d_state % 2:
        raise ValueError(f"d_state={d_state} must be even (stored as d_state/2 complex conjugate pairs)")
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")


def s4_layer_params(d_model: int, d_state: int, dplr: bool) -> int:
    h, n2 = d_model, d_state // 2
    # log_dt, A (real log + imaginary), C (complex as 2 reals), D, out_proj (H -> 2H with bias); DPLR adds P and B
    return h + 2 * h * n2 + 2 * h * n2 + h + 2 * h * h + 2 * h + (4 * h * n2 if dplr else 0)


@dataclass(frozen=True)
class S4Config(ModelConfig):
    """S4D: diagonal A, zero-order hold, Vandermonde kernel."""

    BUILDER: ClassVar[str] = "ssmbench.models.s4:build_s4d"
    d_model: int = 256
    n_layers: int = 2
    vocab_size: int = 256
    backend: str = "auto"  # s4_kernel backend: vandermonde (auto) | reference
    d_state: int = 64  # real state size per channel (32 complex pairs)
    init: str = "lin"  # S4D-Lin ("lin") or S4D-Inv ("inv")
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    conv_backend: str = "auto"  # fft_conv backend: fft (auto) | direct

    def __post_init__(self) -> None:
        check_s4(self.d_state, self.dt_min, self.dt_max, self.backend,
                 wrong=("cauchy", "cauchy_compiled", "cauchy_naive"))
        if self.init not in ("lin", "inv"):
            raise ValueError(f"unknown S4D init '{self.init}'; known: lin, inv")

    def mixer_params(self) -> list[int]:
        return [s4_layer_params(self.d_model, self.d_state, dplr=False)] * self.n_layers


@dataclass(frozen=True)
class S4DPLRConfig(ModelConfig):
    """S4: HiPPO-LegS in diagonal-plus-low-rank form, bilinear discretisation, Cauchy + Woodbury kernel."""

    BUILDER: ClassVar[str] = "ssmbench.models.s4:build_s4_dplr"
    d_model: int = 256
    n_layers: int = 2
    vocab_size: int = 256
    backend: str = "auto"  # s4_kernel backend: cauchy_compiled > cauchy (auto) | cauchy_naive | reference; all take
    # C̃ = C (I − Ā^ℓ), the trained parameter (S4's parametrisation; models/s4.py converts it when ℓ changes)
    d_state: int = 64  # real state size per channel (32 complex pairs)
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    conv_backend: str = "auto"  # fft_conv backend: fft (auto) | direct

    def __post_init__(self) -> None:
        check_s4(self.d_state, self.dt_min, self.dt_max, self.backend, wrong=("vandermonde",))

    def mixer_params(self) -> list[int]:
        return [s4_layer_params(self.d_model, self.d_state, dplr=True)] * self.n_layers
