"""Mamba-1 block (Gu & Dao 2023) in pure PyTorch over ``ssmbench.kernels.selective_scan``.

in_proj (d_model -> 2·d_inner: x, z) -> depthwise causal conv1d (k=d_conv) + SiLU -> x_proj (-> dt_rank + 2N)
-> dt_proj (dt_rank -> d_inner, with bias) -> selective scan (softplus(dt + bias), gated by SiLU(z)) -> out_proj.
Defaults follow the paper: expand 2, d_state 16, d_conv 4, dt_rank = ceil(d_model / 16), A_log = log(1..N)
(S4D-Real), dt log-uniform in [1e-3, 1e-1] through the dt_proj bias (inverse softplus), D = 1.
Decode keeps a conv state (b, d_inner, d_conv) and an SSM state (b, d_inner, N) in float32. ``prefill`` runs
the parallel path over a prompt and fills both: the last d_conv conv inputs and the scan's final state.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ssmbench import kernels
from ssmbench.kernels.conv import fill_conv_state
from ssmbench.kernels.mamba1.step import MambaStepWeights, mamba_step_torch, project_ssm_inputs
from ssmbench.models.blocks import SequenceModel, interleave
from ssmbench.models.configs import MambaConfig


def init_dt_bias(size: int, dt_min: float = 1e-3, dt_max: float = 1e-1, floor: float = 1e-4) -> torch.Tensor:
    """Bias b with softplus(b) = dt, dt log-uniform in [dt_min, dt_max] (Mamba's dt init)."""
    dt = torch.exp(torch.rand(size) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))  # inverse softplus


class MambaMixer(nn.Module):
    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | None = None, backend: str = "auto") -> None:
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state, self.d_conv = d_state, d_conv
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.backend = backend
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv_weight = nn.Parameter(torch.empty(self.d_inner, d_conv).uniform_(-d_conv**-0.5, d_conv**-0.5))
        self.conv_bias = nn.Parameter(torch.zeros(self.d_inner))
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank**-0.5, self.dt_rank**-0.5)
        with torch.no_grad():
            self.dt_proj.bias.copy_(init_dt_bias(self.d_inner))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def _ssm_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (..., d_inner) after conv -> delta (..., d_inner) pre-bias, B (..., N), C (..., N)."""
        return project_ssm_inputs(x, self.x_proj.weight, self.dt_proj.weight, self.d_state)

    def _mix(self, hidden: torch.Tensor, return_state: bool = False):
        """hidden (b, l, d_model) -> out (b, l, d_model) [, conv input (b, d_inner, l), final state (b, d_inner, N)]."""
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # (b, l, d_inner) each
        x_in = x.transpose(1, 2)
        x = kernels.causal_conv1d(x_in, self.conv_weight, self.conv_bias, activation="silu")
        delta, B, C = self._ssm_inputs(x.transpose(1, 2))
        A = -torch.exp(self.A_log.float())
        y = kernels.selective_scan(x, delta.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D=self.D.float(),
                                   z=z.transpose(1, 2), delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
                                   return_last_state=return_state, backend=self.backend)
        if not return_state:
            return self.out_proj(y.transpose(1, 2))
        y, last = y
        return self.out_proj(y.transpose(1, 2)), x_in, last

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._mix(hidden)

    def prefill(self, hidden: torch.Tensor, cache: dict) -> torch.Tensor:
        """Parallel forward over a prompt (b, l, d_model) from an empty state; leaves the state after token l."""
        out, x_in, last = self._mix(hidden, return_state=True)
        fill_conv_state(cache["conv"], x_in)  # the last d_conv conv *inputs*, as the decode step keeps them
        cache["ssm"].copy_(last)
        return out

    def allocate_inference_cache(self, batch: int, max_len: int, dtype: torch.dtype) -> dict:
        device = self.in_proj.weight.device
        state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        return {"conv": torch.zeros(batch, self.d_inner, self.d_conv, device=device, dtype=dtype),
                "ssm": torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=state_dtype)}

    def step_weights(self) -> MambaStepWeights:
        return MambaStepWeights(self.in_proj.weight, self.conv_weight, self.conv_bias, self.x_proj.weight,
                                self.dt_proj.weight, self.dt_proj.bias, self.A_log, self.D, self.out_proj.weight)

    def step(self, hidden: torch.Tensor, cache: dict) -> torch.Tensor:
        if torch.compiler.is_compiling():
            # Under torch.compile the PyTorch step is the faster one: inductor fuses it with the norms and the head,
            # freezes the weights and autotunes the matvecs (d_model 256 x 2 layers, batch 1, one thread: 142 vs
            # 209 us per token in bfloat16, 261 vs 312 us in float32 against the C++ step as a graph op).
            return mamba_step_torch(hidden, cache["conv"], cache["ssm"], self.step_weights())
        # Eagerly, the scan backends "auto" and "compiled" decode with the fastest step (the C++ one on CPU); any
        # other (an explicit PyTorch or GPU scan) with the PyTorch step, so a pure-PyTorch model stays pure PyTorch.
        backend = "auto" if self.backend in ("auto", "compiled") else "torch"
        return kernels.mamba_step(hidden, cache["conv"], cache["ssm"], self.step_weights(), backend=backend)


def build(config: MambaConfig) -> SequenceModel:
    mixers = interleave(config.n_layers, lambda i: MambaMixer(config.d_model, config.d_state, config.d_conv,
                                                              config.expand, config.dt_rank, config.backend))
    return SequenceModel(config.vocab_size, config.d_model, mixers)
