"""S4D (diagonal, ZOH) and S4 (DPLR, HiPPO-LegS, bilinear) in pure PyTorch over ``ssmbench.kernels``.

The layer is the minimal S4D block (state-spaces/s4 ``models/s4/s4d.py``), layout (b, l, H) with H = d_model
independent SSM channels:

    u (b, l, H) -> K = s4_kernel(L) (H, L) -> y = fft_conv(u, K) + D·u -> GELU -> Linear(H, 2H) -> GLU -> (b, l, H)

and a ``SequenceModel`` wraps it with pre-norm residual blocks. Parameters (stored as real tensors, so
``model.double()`` / ``.to(bf16)`` convert them; complex values are (..., 2) real views):
- dt = exp(log_dt), log-uniform in [dt_min, dt_max];
- A = −exp(A_log_real) + i·A_imag with Re A = −1/2 at init (negative real part by construction);
- S4D: B = 1 (folded into C, as in S4D), C ~ CN(0, 1); init "lin" (A_n = −1/2 + iπn) or "inv";
- S4-DPLR: (Λ, P, B) from the diagonalised NPLR form of HiPPO-LegS, C ~ CN(0, 1), A_full = Λ − P P*.
  As in S4, the trained output vector is C̃ = C (I − Ā^ℓ) for the layer's kernel length ℓ (``l_kernel``, a
  buffer), which is what the Cauchy kernel consumes, so a forward pass never forms Ā^ℓ. ``l_kernel`` = 0 (a new
  layer) means the parameter still holds the plain C: the first forward at length L converts it to C̃ for ℓ = L.
  A longer input doubles ℓ (C̃_{2ℓ} = C̃_ℓ (I + Ā^ℓ)) until ℓ ≥ L; a shorter one uses the length-ℓ kernel cut to L
  (K_l = C Ā^l B̄ does not depend on ℓ). Both conversions run under no_grad and rewrite the parameter in place.
A, B, P and dt carry ``_optim = {"lr": 1e-3, "weight_decay": 0.0}`` (S4's convention for SSM parameters).

Decode: S4D keeps a complex diagonal state (b, H, N/2): x_k = Ā x_{k−1} + B̄ u_k, y = 2 Re(C x_k) + D u_k.
S4-DPLR keeps the real state (b, H, N) of the dense real form and steps with the dense discrete (Ā, B̄) (N×N per
channel) and C = C̃ (I − Ā^ℓ)^{-1}, computed once by ``allocate_inference_cache`` (call it again after changing
parameters). Either way
the state holds d_state real numbers per channel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench import kernels
from ssmbench.kernels.s4.ctilde import c_from_ctilde, ctilde
from ssmbench.kernels.s4.hippo import nplr_legs, s4d_init
from ssmbench.kernels.s4.reference import dplr_dense, zoh_discretize
from ssmbench.models.blocks import SequenceModel, interleave
from ssmbench.models.configs import S4Config, S4DPLRConfig

SSM_OPTIM = {"lr": 1e-3, "weight_decay": 0.0}
PREFILL_CHUNK = 64  # a power of two: tokens per chunk of the prefill's state computation (S4Layer.prefill)


def _real_param(z: torch.Tensor) -> nn.Parameter:
    """A complex tensor stored as a real (..., 2) parameter."""
    return nn.Parameter(torch.view_as_real(z.to(torch.complex64)).clone())


class S4Layer(nn.Module):
    """One S4 mixer: H = d_model SSM channels with d_state real state each (d_state/2 complex pairs)."""

    def __init__(self, d_model: int, d_state: int = 64, mode: str = "diag", init: str = "lin",
                 dt_min: float = 1e-3, dt_max: float = 1e-1, backend: str = "auto",
                 conv_backend: str = "auto") -> None:
        super().__init__()
        if mode not in ("diag", "dplr"):
            raise ValueError(f"unknown S4 mode '{mode}'; known: diag, dplr")
        H, N2 = d_model, d_state // 2
        self.d_model, self.d_state, self.mode = d_model, d_state, mode
        self.backend, self.conv_backend = backend, conv_backend
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        if mode == "diag":
            A = s4d_init(d_state, init)
        else:
            A, P, B, _ = nplr_legs(d_state)
            self.P = _real_param(P.repeat(H, 1))
            self.B = _real_param(B.repeat(H, 1))
            # length ℓ of the C̃ held in self.C (0: plain C); a buffer so it travels with C in the state dict, mirrored
            # in a Python int so that reading it costs no device sync (and no graph break under torch.compile)
            self.register_buffer("l_kernel", torch.zeros((), dtype=torch.long))
        self._l_kernel = 0
        A = A.repeat(H, 1)
        self.log_dt = nn.Parameter(log_dt)
        self.A_log_real = nn.Parameter(torch.log(-A.real).float())
        self.A_imag = nn.Parameter(A.imag.float())
        self.C = _real_param(torch.randn(H, N2, dtype=torch.complex64))
        self.D = nn.Parameter(torch.randn(H))
        for name in ("log_dt", "A_log_real", "A_imag", "P", "B"):
            if hasattr(self, name):
                getattr(self, name)._optim = dict(SSM_OPTIM)
        self.out_proj = nn.Linear(H, 2 * H)
        self._step_matrices: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def ssm_params(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """dt (H,) real and A, B, C[, P] (H, N2) complex, in ``dtype`` (float32 or float64)."""
        def cplx(p: torch.Tensor) -> torch.Tensor:
            return torch.view_as_complex(p.to(dtype).contiguous())

        A = torch.complex(-torch.exp(self.A_log_real.to(dtype)), self.A_imag.to(dtype))
        out = {"dt": torch.exp(self.log_dt.to(dtype)), "A": A, "C": cplx(self.C)}
        if self.mode == "diag":
            out["B"] = torch.ones_like(A)
        else:
            out["B"], out["P"] = cplx(self.B), cplx(self.P)
        return out

    def _compute_dtype(self) -> torch.dtype:
        # Kernels and FFTs run in float32 at least: half-precision phases exp(i·l·ΔA) are useless for long L.
        return torch.float64 if self.log_dt.dtype == torch.float64 else torch.float32

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.mode == "dplr":
            self._l_kernel = int(self.l_kernel)

    @torch.no_grad()
    def _setup_ctilde(self, L: int) -> None:
        """Make self.C hold C̃ for a kernel length ℓ ≥ L (module docstring): C -> C̃_L, or doublings of ℓ."""
        if self._l_kernel >= L:
            return
        p = self.ssm_params(self._compute_dtype())
        C, length = p["C"], self._l_kernel
        if length == 0:
            C, length = ctilde(p["dt"], p["A"], p["P"], C, L), L
        while length < L:
            C, length = ctilde(p["dt"], p["A"], p["P"], C, length, sign=1), 2 * length
        self.C.copy_(torch.view_as_real(C).to(self.C.dtype))
        self._l_kernel = length
        self.l_kernel.fill_(length)

    def output_vector(self, dtype: torch.dtype) -> torch.Tensor:
        """The recurrence's C (H, N2) complex: self.C itself for S4D, C̃ (I − Ā^ℓ)^{-1} for S4-DPLR."""
        p = self.ssm_params(dtype)
        if self.mode == "diag" or self._l_kernel == 0:
            return p["C"]
        return c_from_ctilde(p["dt"], p["A"], p["P"], p["C"], self._l_kernel)

    def kernel(self, L: int) -> torch.Tensor:
        """The SSM convolution kernel K (H, L) in the compute dtype."""
        length = L
        if self.mode == "dplr":
            self._setup_ctilde(L)
            length = self._l_kernel
        p = self.ssm_params(self._compute_dtype())
        K = kernels.s4_kernel(p["dt"], p["A"], p["B"], p["C"], length, P=p.get("P"), mode=self.mode,
                              backend=self.backend)
        return K if length == L else K[:, :L]

    def _output(self, y: torch.Tensor) -> torch.Tensor:
        """GELU -> Linear(H, 2H) -> GLU on (..., H)."""
        return F.glu(self.out_proj(F.gelu(y)), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (b, l, H) -> (b, l, H)."""
        K = self.kernel(x.shape[1])
        y = kernels.fft_conv(x.transpose(1, 2), K, self.D, backend=self.conv_backend)  # (b, H, l), x's dtype
        return self._output(y.transpose(1, 2))

    def allocate_inference_cache(self, batch: int, max_len: int, dtype: torch.dtype) -> dict:
        """Zero state: (b, H, N/2) complex for S4D, (b, H, N) real for S4-DPLR (float64 iff dtype is). Discretises
        the SSM once for the steps and the prefill (:attr:`_step_matrices`): later parameter updates need a new
        cache, as with any recurrent decoder."""
        device = self.log_dt.device
        real = torch.float64 if dtype == torch.float64 else torch.float32
        with torch.no_grad():
            p = self.ssm_params(real)
            if self.mode == "diag":
                dA, dB = zoh_discretize(p["dt"], p["A"], p["B"])
                self._step_matrices = (dA, dB, p["C"])
                cdtype = torch.complex128 if real == torch.float64 else torch.complex64
                return {"state": torch.zeros(batch, self.d_model, self.d_state // 2, device=device, dtype=cdtype)}
            self._step_matrices = dplr_dense(p["dt"], p["A"], p["P"], p["B"], self.output_vector(real))
        return {"state": torch.zeros(batch, self.d_model, self.d_state, device=device, dtype=real)}

    def _discretised(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Ā, B̄, C) of allocate_inference_cache, checked against the state's precision."""
        if self._step_matrices is None or self._step_matrices[0].dtype != state.dtype:
            raise RuntimeError("S4 decoding needs allocate_inference_cache() first (it discretises the SSM once)")
        return self._step_matrices

    def _advance(self, dA: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Ā h for states h (b, H, N): elementwise for S4D's diagonal Ā (H, N/2); for S4-DPLR's dense Ā (H, N, N)
        one GEMM per channel with the batch as rows, h Āᵀ: the column form Ā h[..., None] ran at half the speed
        (256 channels x 64 x 64, batch 1, one thread: 400 vs 200 us)."""
        if self.mode == "diag":
            return dA * h
        return torch.bmm(h.transpose(0, 1), dA.transpose(1, 2)).transpose(0, 1)

    def _krylov(self, dA: torch.Tensor, dB: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, Ā^c): K = [Ā^(c-1) B̄, ..., Ā B̄, B̄] (H, N, c), c the smallest power of two ≥ width, by doubling
        (K_2j = [Ā^j K_j, K_j], Ā^2j = Ā^j Ā^j): log2 c products instead of c dependent mat-vecs."""
        krylov, power = dB[..., None], dA
        while krylov.shape[-1] < width:
            ahead = power[..., None] * krylov if self.mode == "diag" else power @ krylov
            krylov = torch.cat([ahead, krylov], dim=-1)
            power = power * power if self.mode == "diag" else power @ power
        return krylov, power

    def prefill(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        """Parallel forward over a prompt (b, l, H) from an empty state; leaves the state after token l,
        h_l = sum_k Ā^(l-1-k) B̄ u_k, computed in chunks of c tokens: the Krylov block K = [Ā^(c-1) B̄, ..., B̄]
        (H, N, c) and Ā^c are built once (:meth:`_krylov`), then every chunk is h <- Ā^c h + K u_chunk, one
        batched GEMM over the channels. The first chunk is the l mod c tokens that do not fill one; it starts
        from the zero state, so it needs only K's last columns. The token-by-token recurrence this replaces took
        ~1 s for a 1k prompt (S4-DPLR, d_model 256, 2 layers, one thread; S4D's Vandermonde sum 250 ms).
        """
        out = self.forward(x)
        state = cache["state"]
        dA, dB, _ = self._discretised(state)
        length = x.shape[1]
        with torch.no_grad():
            krylov, power = self._krylov(dA, dB, min(PREFILL_CHUNK, length))
            c = krylov.shape[-1]
            # A complex K times a real input is two real products. Contiguous operands throughout: with a strided
            # one the batched product falls back to one small GEMM per channel (measured 3x slower).
            parts = [krylov.real.contiguous(), krylov.imag.contiguous()] if krylov.is_complex() else [krylov]
            u = x.to(state.real.dtype).permute(2, 1, 0).contiguous()  # (H, l, b)

            def chunk_sum(start: int, stop: int, columns: slice) -> torch.Tensor:
                """sum_j K[h, n, columns][j] u[h, start + j, b] -> (b, H, N)."""
                sums = [torch.matmul(k[..., columns], u[:, start:stop]).permute(2, 0, 1) for k in parts]
                return torch.complex(*sums) if len(sums) == 2 else sums[0]

            first = length % c or c
            h = chunk_sum(0, first, slice(c - first, c))
            for start in range(first, length, c):
                h = self._advance(power, h) + chunk_sum(start, start + c, slice(0, c))
            state.copy_(h)
        return out

    def step(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        """One token. x: (b, H) -> (b, H); cache["state"] is updated in place."""
        state = cache["state"]
        dA, dB, C = self._discretised(state)
        u = x.to(state.real.dtype)
        state.copy_(self._advance(dA, state) + dB * u[..., None])
        y = 2 * (C * state).sum(-1).real if self.mode == "diag" else (C * state).sum(-1)
        y = y + self.D.to(u.dtype) * u
        return self._output(y.to(x.dtype))


def build_s4d(config: S4Config) -> SequenceModel:
    mixers = interleave(config.n_layers, lambda i: S4Layer(
        config.d_model, config.d_state, "diag", config.init, config.dt_min, config.dt_max, config.backend,
        config.conv_backend))
    return SequenceModel(config.vocab_size, config.d_model, mixers)


def build_s4_dplr(config: S4DPLRConfig) -> SequenceModel:
    mixers = interleave(config.n_layers, lambda i: S4Layer(
        config.d_model, config.d_state, "dplr", "legs", config.dt_min, config.dt_max, config.backend,
        config.conv_backend))
    return SequenceModel(config.vocab_size, config.d_model, mixers)
