"""Mamba-2 block (Dao & Gu 2024) in pure PyTorch over ``ssmbench.kernels.ssd``.

in_proj (d_model -> [z, x, B, C, dt], widths d_inner, d_inner, G·N, G·N, H) -> depthwise causal conv1d + SiLU over
xBC (conv_dim = d_inner + 2·G·N) -> SSD with A = -exp(A_log) per head, dt = softplus(dt + dt_bias), D per head
-> gated RMSNorm norm(y ⊙ SiLU(z)) in groups of d_inner / G -> out_proj.
Init as upstream ``modules/mamba2.py``: A_log = log U[1, 16] per head, dt_bias = softplus⁻¹(dt) with dt log-uniform
in [1e-3, 1e-1] (``init_dt_bias`` from the Mamba-1 block), D = 1.
Decode keeps a conv state (b, conv_dim, d_conv) and an SSM state (b, H, P, N), float32 (float64 for a float64
model): H_t = exp(dt·A) H_{t-1} + dt·x Bᵀ, y = H C + D·x.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench import kernels
from ssmbench.kernels.conv import causal_conv1d_step, fill_conv_state
from ssmbench.kernels.mamba2 import default_chunk_size
from ssmbench.models.blocks import SequenceModel, interleave
from ssmbench.models.configs import Mamba2Config, resolve_headdim
from ssmbench.models.mamba import init_dt_bias


class GatedRMSNorm(nn.Module):
    """RMSNorm(y ⊙ SiLU(z)) normalised within groups of ``group_size`` channels (Mamba-2, norm_before_gate=False)."""

    def __init__(self, dim: int, group_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.group_size, self.eps = group_size, eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """y, z: (..., dim) -> (..., dim) in y's dtype."""
        dtype = y.dtype
        # Normalise in at least float32 so bf16 activations don't lose the mean square.
        yf = y.float() if dtype in (torch.float16, torch.bfloat16) else y
        yf = yf * F.silu(z.to(yf.dtype))
        grouped = yf.unflatten(-1, (-1, self.group_size))
        grouped = grouped * torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + self.eps)
        return grouped.flatten(-2).to(dtype) * self.weight


class Mamba2Mixer(nn.Module):
    def __init__(self, d_model: int, d_state: int = 64, d_conv: int = 4, expand: int = 2, headdim: int = 64,
                 ngroups: int = 1, chunk_size: int | None = None, backend: str = "auto") -> None:
        super().__init__()
        self.d_inner = expand * d_model
        self.headdim = resolve_headdim(self.d_inner, headdim, ngroups)
        self.nheads = self.d_inner // self.headdim
        self.d_state, self.d_conv, self.ngroups = d_state, d_conv, ngroups
        self.chunk_size, self.backend = chunk_size, backend
        self.conv_dim = self.d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(d_model, self.d_inner + self.conv_dim + self.nheads, bias=False)
        self.conv_weight = nn.Parameter(torch.empty(self.conv_dim, d_conv).uniform_(-d_conv**-0.5, d_conv**-0.5))
        self.conv_bias = nn.Parameter(torch.zeros(self.conv_dim))
        self.dt_bias = nn.Parameter(init_dt_bias(self.nheads))
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        self.norm = GatedRMSNorm(self.d_inner, self.d_inner // ngroups)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def _split(self, zxbcdt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(..., in_proj width) -> z (..., d_inner), xBC (..., conv_dim), dt (..., nheads)."""
        return zxbcdt.split([self.d_inner, self.conv_dim, self.nheads], dim=-1)

    def _state_dtype(self) -> torch.dtype:
        return torch.float64 if self.A_log.dtype == torch.float64 else torch.float32

    def _mix(self, hidden: torch.Tensor, return_state: bool = False):
        """hidden (b, l, d_model) -> out (b, l, d_model) [, conv input (b, conv_dim, l), final state (b, H, P, N)]."""
        b, length, _ = hidden.shape
        z, xbc, dt = self._split(self.in_proj(hidden))
        xbc_in = xbc.transpose(1, 2)
        xbc = kernels.causal_conv1d(xbc_in, self.conv_weight, self.conv_bias, activation="silu").transpose(1, 2)
        x, B, C = xbc.split([self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        st = self._state_dtype()
        chunk = self.chunk_size or default_chunk_size(hidden.device.type)
        y = kernels.ssd(x.reshape(b, length, self.nheads, self.headdim), dt, -torch.exp(self.A_log.to(st)),
                        B.reshape(b, length, self.ngroups, self.d_state),
                        C.reshape(b, length, self.ngroups, self.d_state), chunk, D=self.D.to(st),
                        dt_bias=self.dt_bias.to(st), dt_softplus=True, return_final_states=return_state,
                        backend=self.backend)
        y, final = y if return_state else (y, None)
        out = self.out_proj(self.norm(y.reshape(b, length, self.d_inner), z))
        return (out, xbc_in, final) if return_state else out

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (b, l, d_model) -> (b, l, d_model)."""
        return self._mix(hidden)

    def prefill(self, hidden: torch.Tensor, cache: dict) -> torch.Tensor:
        """Parallel forward over a prompt (b, l, d_model) from an empty cache; leaves the state after token l."""
        out, xbc_in, final = self._mix(hidden, return_state=True)
        fill_conv_state(cache["conv"], xbc_in)  # the last d_conv conv *inputs*, as the decode step keeps them
        cache["ssm"].copy_(final)
        return out

    def allocate_inference_cache(self, batch: int, max_len: int, dtype: torch.dtype) -> dict:
        device = self.in_proj.weight.device
        return {"conv": torch.zeros(batch, self.conv_dim, self.d_conv, device=device, dtype=dtype),
                "ssm": torch.zeros(batch, self.nheads, self.headdim, self.d_state, device=device,
                                   dtype=self._state_dtype())}

    def step(self, hidden: torch.Tensor, cache: dict) -> torch.Tensor:
        """hidden: (b, d_model) -> (b, d_model); updates cache["conv"] and cache["ssm"] in place."""
        b = hidden.shape[0]
        z, xbc, dt = self._split(self.in_proj(hidden))
        xbc = causal_conv1d_step(xbc, cache["conv"], self.conv_weight, self.conv_bias, activation="silu")
        x, B, C = xbc.split([self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        h = cache["ssm"]  # (b, H, P, N)
        st = h.dtype
        dt = F.softplus(dt.to(st) + self.dt_bias.to(st))  # (b, H)
        decay = torch.exp(dt * -torch.exp(self.A_log.to(st)))
        x = x.to(st).view(b, self.nheads, self.headdim)
        per_group = self.nheads // self.ngroups
        B = B.to(st).view(b, self.ngroups, self.d_state).repeat_interleave(per_group, dim=1)  # (b, H, N)
        C = C.to(st).view(b, self.ngroups, self.d_state).repeat_interleave(per_group, dim=1)
        h.mul_(decay[..., None, None]).add_((dt[..., None] * x)[..., None] * B[:, :, None, :])
        y = (h @ C[..., None]).squeeze(-1) + self.D.to(st)[:, None] * x  # (b, H, P)
        y = self.norm(y.reshape(b, self.d_inner).to(hidden.dtype), z)
        return self.out_proj(y)


def build(config: Mamba2Config) -> SequenceModel:
    mixers = interleave(config.n_layers, lambda i: Mamba2Mixer(
        config.d_model, config.d_state, config.d_conv, config.expand, config.headdim, config.ngroups,
        config.chunk_size, config.backend))
    return SequenceModel(config.vocab_size, config.d_model, mixers)
