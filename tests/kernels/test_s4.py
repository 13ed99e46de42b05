"""S4 kernels: the fast paths (vandermonde, cauchy, fft) against the oracles (recurrence, direct conv).

float64 comparisons are tight (the algorithms are exact up to rounding); float32 ones use the upstream
S4 tolerances.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from ssmbench import kernels
from ssmbench.kernels import BackendUnavailable
from ssmbench.kernels.s4.compiled import probe
from ssmbench.kernels.s4.ctilde import ctilde
from ssmbench.kernels.s4.diag import block_size
from ssmbench.kernels.s4.hippo import hippo_legs, nplr_legs, s4d_init
from ssmbench.kernels.s4.reference import bilinear_discretize

F64 = {"rtol": 1e-9, "atol": 1e-11}


def make_params(H: int, N: int, mode: str, init: str = "lin", dtype: torch.dtype = torch.float64,
                seed: int = 0, dt_range: tuple[float, float] = (1e-2, 0.5)) -> dict[str, torch.Tensor]:
    """Random kernel parameters around the standard inits (perturbed so every channel differs)."""
    g = torch.Generator().manual_seed(seed)
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64

    def crandn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.complex128)

    lo, hi = math.log(dt_range[0]), math.log(dt_range[1])
    dt = torch.exp(torch.rand(H, generator=g, dtype=torch.float64) * (hi - lo) + lo)
    if mode == "diag":
        A = s4d_init(N, init).repeat(H, 1)
        B = 1 + 0.3 * crandn(H, N // 2)
        P = None
    else:
        Lam, P0, B0, _ = nplr_legs(N)
        A, P, B = Lam.repeat(H, 1), P0.repeat(H, 1) + 0.1 * crandn(H, N // 2), B0.repeat(H, 1)
    # Keep Re A < 0 while moving every channel away from the init.
    A = torch.complex(A.real * torch.exp(0.2 * torch.randn(A.shape, generator=g, dtype=torch.float64)),
                      A.imag + 0.3 * torch.randn(A.shape, generator=g, dtype=torch.float64))
    out = {"dt": dt, "A": A, "B": B, "C": crandn(H, N // 2), "P": P}
    return {k: None if v is None else v.to(cdtype if v.is_complex() else dtype) for k, v in out.items()}


def kernel(p: dict[str, torch.Tensor], L: int, mode: str, backend: str = "auto") -> torch.Tensor:
    return kernels.s4_kernel(p["dt"], p["A"], p["B"], p["C"], L, P=p["P"], mode=mode, backend=backend)


@pytest.mark.parametrize("init", ["lin", "inv"])
@pytest.mark.parametrize("H,N,L", [(1, 2, 1), (3, 8, 7), (2, 16, 64), (4, 64, 257), (2, 6, 1000)],
                         ids=lambda v: str(v))
def test_s4d_vandermonde_matches_recurrence(H: int, N: int, L: int, init: str) -> None:
    p = make_params(H, N, "diag", init)
    ref = kernel(p, L, "diag", "reference")
    out = kernel(p, L, "diag", "vandermonde")
    assert out.shape == (H, L) and out.dtype == torch.float64
    torch.testing.assert_close(out, ref, **F64)


@pytest.mark.parametrize("L", [1024, 4096], ids=lambda v: f"L{v}")
def test_s4d_vandermonde_float32(L: int) -> None:
    p64 = make_params(8, 64, "diag", "inv", dt_range=(1e-3, 1e-1))
    p32 = {k: None if v is None else v.to(torch.complex64 if v.is_complex() else torch.float32) for k, v in p64.items()}
    ref = kernel(p64, L, "diag", "vandermonde")
    out = kernel(p32, L, "diag")
    assert out.dtype == torch.float32
    # S4's own Vandermonde test uses 1e-3 beyond L=1024 (float32 phase error grows with l·Im ΔA).
    torch.testing.assert_close(out.double(), ref, rtol=1e-3, atol=1e-3 * ref.abs().max().item())


CAUCHY = ("cauchy", "cauchy_compiled", "cauchy_naive")


@pytest.fixture
def usable(require_compiled) -> Callable[[str], str]:
    """``usable(backend)``: the backend name; cauchy_compiled skips only without a C++ toolchain (a failed build
    fails: conftest)."""
    def check(backend: str) -> str:
        if backend == "cauchy_compiled":
            require_compiled(probe)
        return backend
    return check


@pytest.mark.parametrize("backend", CAUCHY)
@pytest.mark.parametrize("L", [1, 5, 16, 33], ids=lambda v: f"L{v}")
@pytest.mark.parametrize("N", [2, 4, 8], ids=lambda v: f"N{v}")
def test_dplr_cauchy_matches_dense_recurrence(N: int, L: int, backend: str, usable: Callable[[str], str]) -> None:
    p = make_params(3, N, "dplr", seed=N + L)
    ref = kernel(p, L, "dplr", "reference")
    out = kernel(p, L, "dplr", usable(backend))
    assert out.shape == (3, L)
    torch.testing.assert_close(out, ref, **F64)


@pytest.mark.parametrize("backend", CAUCHY)
@pytest.mark.parametrize("L", [64, 200], ids=lambda v: f"L{v}")
def test_dplr_cauchy_matches_dense_recurrence_n64(L: int, backend: str, usable: Callable[[str], str]) -> None:
    p = make_params(2, 64, "dplr", dt_range=(1e-3, 1e-1), seed=L)
    ref = kernel(p, L, "dplr", "reference")
    torch.testing.assert_close(kernel(p, L, "dplr", usable(backend)), ref, rtol=1e-8,
                               atol=1e-10 * ref.abs().max().item())


@pytest.mark.parametrize("backend", CAUCHY)
def test_dplr_float32_close_to_float64(backend: str, usable: Callable[[str], str]) -> None:
    p64 = make_params(4, 64, "dplr", dt_range=(1e-3, 1e-1))
    p32 = {k: v.to(torch.complex64 if v.is_complex() else torch.float32) for k, v in p64.items()}
    ref = kernel(p64, 512, "dplr", "reference")
    out = kernel(p32, 512, "dplr", usable(backend))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-3, atol=1e-3 * ref.abs().max().item())


@pytest.mark.parametrize("backend", ["cauchy", "cauchy_compiled"])
def test_dplr_backward_saves_no_per_frequency_reciprocals(backend: str, usable: Callable[[str], str]) -> None:
    """Training memory: nothing of size (H, N, F) is saved for backward (cauchy_naive saves every chunk's)."""
    H, N, L = 4, 16, 512
    p = {k: v.requires_grad_(True) for k, v in make_params(H, N, "dplr").items()}
    largest = {}
    for name in (usable(backend), "cauchy_naive"):
        sizes: list[int] = []

        def pack(t: torch.Tensor, sizes: list[int] = sizes) -> torch.Tensor:
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            kernel(p, L, "dplr", name).sum().backward()
        largest[name] = max(sizes)
    assert largest[backend] < H * N * (L // 2 + 1) <= largest["cauchy_naive"]


@pytest.mark.parametrize("L", [5, 33], ids=lambda v: f"L{v}")
def test_compiled_cauchy_kernel_is_one_graph_matching_eager_in_float64(L: int, usable: Callable[[str], str]) -> None:
    """Under torch.compile the C++ Cauchy kernel is the op ssmbench::s4_cauchy_woodbury (no graph break, no
    torch.compiler.disable): kernel and gradients equal the eager C++ path and the dense recurrence."""
    from ssmbench.kernels.s4.dplr import pair_coefficients

    backend = usable("cauchy_compiled")
    p = {k: v.requires_grad_(True) for k, v in make_params(3, 8, "dplr", seed=L).items()}
    g = torch.randn(3, L, generator=torch.Generator().manual_seed(L), dtype=torch.float64)
    eager = kernel(p, L, "dplr", backend)
    ref = (eager, *torch.autograd.grad((eager * g).sum(), list(p.values())))
    torch.testing.assert_close(eager, kernel(p, L, "dplr", "reference"), **F64)
    torch._dynamo.reset()
    compiled = torch.compile(lambda p: kernel(p, L, "dplr", backend), backend="aot_eager", fullgraph=True)
    out = compiled(p)
    for a, r in zip((out, *torch.autograd.grad((out * g).sum(), list(p.values()))), ref, strict=True):
        torch.testing.assert_close(a, r, **F64)
    omega = torch.polar(torch.ones(L // 2 + 1, dtype=torch.float64),
                        -torch.arange(L // 2 + 1, dtype=torch.float64) * (2 * math.pi / L))
    coef = pair_coefficients(p["A"], p["P"], p["B"], p["C"]).detach().requires_grad_()
    x = (1 / p["dt"]).detach().requires_grad_()
    torch.library.opcheck(torch.ops.ssmbench.s4_cauchy_woodbury.default, (1 - omega, x, (1 + omega) / 2, coef))


@pytest.mark.parametrize("N", [8, 64], ids=lambda v: f"N{v}")
def test_nplr_form_reconstructs_hippo_legs(N: int) -> None:
    """V (diag(Λ, Λ̄) − P̃ P̃*) V* over the full basis V = [V_h, V̄_h] is the original HiPPO-LegS A."""
    A, B = hippo_legs(N)
    Lam, P_t, B_t, V_h = nplr_legs(N)
    V = torch.cat([V_h, V_h.conj()], dim=-1)
    Pf, Bf = torch.cat([P_t, P_t.conj()]), torch.cat([B_t, B_t.conj()])
    A_rec = V @ (torch.diag(torch.cat([Lam, Lam.conj()])) - Pf[:, None] * Pf.conj()[None, :]) @ V.conj().T
    torch.testing.assert_close(A_rec, A.to(A_rec.dtype), rtol=0, atol=1e-10 * N)
    torch.testing.assert_close(V @ Bf, B.to(Bf.dtype), rtol=0, atol=1e-10 * N)
    assert torch.all(Lam.real == -0.5) and torch.all(Lam.imag > 0)


@pytest.mark.parametrize("N", [8, 64], ids=lambda v: f"N{v}")
def test_dplr_kernel_equals_hippo_in_original_basis(N: int) -> None:
    """Cauchy kernel of the diagonalised NPLR parameters == Krylov kernel of the dense HiPPO-LegS matrix."""
    A, B = hippo_legs(N)
    Lam, P_t, B_t, V_h = nplr_legs(N)
    g = torch.Generator().manual_seed(N)
    c = torch.randn(2, N, generator=g, dtype=torch.float64)  # two channels with different outputs
    dt = torch.tensor([0.02, 0.1], dtype=torch.float64)
    L = 40
    dA, dB = bilinear_discretize(dt, A.expand(2, N, N), B.expand(2, N))
    x, ref = dB, []
    for _ in range(L):
        ref.append((c * x).sum(-1))
        x = (dA @ x[..., None])[..., 0]
    ref = torch.stack(ref, dim=-1)
    Lam2, P2 = Lam.expand(2, -1), P_t.expand(2, -1)
    Ct = ctilde(dt, Lam2, P2, c.to(torch.complex128) @ V_h, L)  # the kernel takes C̃ = C (I − Ā^L)
    out = kernels.s4_kernel(dt, Lam2, B_t.expand(2, -1), Ct, L, P=P2, mode="dplr")
    torch.testing.assert_close(out, ref, rtol=1e-8, atol=1e-10 * ref.abs().max().item())


@pytest.mark.parametrize("mode,fast", [("diag", "vandermonde"), ("dplr", "cauchy"), ("dplr", "cauchy_compiled"),
                                       ("dplr", "cauchy_naive")])
@pytest.mark.parametrize("L", [1, 6, 33], ids=lambda v: f"L{v}")
def test_kernel_gradients_match_reference(mode: str, fast: str, L: int, usable: Callable[[str], str]) -> None:
    """Gradients of every kernel parameter (dt, A, B, C, P) through the fast path == through the recurrence."""
    fast = usable(fast)
    p = make_params(3, 8, mode, "inv", seed=L)
    g = torch.randn(3, L, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = {}
    for backend in (fast, "reference"):
        leaves = {k: v.clone().requires_grad_(True) for k, v in p.items() if v is not None}
        out = kernel({**p, **leaves}, L, mode, backend)
        grads[backend] = torch.autograd.grad((out * g).sum(), list(leaves.values()))
    names = [k for k, v in p.items() if v is not None]
    for name, a, b in zip(names, grads[fast], grads["reference"], strict=True):
        torch.testing.assert_close(a, b, **F64, msg=lambda m, name=name: f"grad of {name}: {m}")


def test_vandermonde_gradcheck() -> None:
    p = make_params(2, 4, "diag", seed=3)
    args = [p["dt"].requires_grad_(), p["A"].requires_grad_(), p["B"], p["C"].requires_grad_()]
    assert torch.autograd.gradcheck(lambda dt, A, B, C: kernels.s4_kernel(dt, A, B, C, 11), args)


@pytest.mark.parametrize("L", [1, 2, 3, 15, 16, 17, 1000, 4096])
def test_block_size_covers_length(L: int) -> None:
    c = block_size(L)
    assert c * c >= L and (c == 1 or (c // 2) ** 2 < L) and c & (c - 1) == 0


def test_auto_dispatch_by_mode() -> None:
    compiled = {b.name: b for b in kernels.backends("s4_kernel", "cpu")}["cauchy_compiled"].available
    for mode, fast in (("diag", "vandermonde"), ("dplr", "cauchy_compiled" if compiled else "cauchy")):
        kernel(make_params(2, 4, mode), 5, mode)
        assert kernels.last_backend("s4_kernel") == fast


def test_kernel_argument_errors() -> None:
    diag, dplr = make_params(2, 4, "diag"), make_params(2, 4, "dplr")
    with pytest.raises(ValueError, match="mode='diag' kernels only"):
        kernel(dplr, 5, "dplr", "vandermonde")
    with pytest.raises(ValueError, match="mode='dplr' kernels only"):
        kernel(diag, 5, "diag", "cauchy")
    with pytest.raises(ValueError, match="needs P"):
        kernel({**dplr, "P": None}, 5, "dplr")
    with pytest.raises(ValueError, match="only used by mode='dplr'"):
        kernel({**diag, "P": dplr["P"]}, 5, "diag", "reference")
    with pytest.raises(ValueError, match="unknown s4_kernel mode"):
        kernel(diag, 5, "bogus", "reference")
    with pytest.raises(ValueError, match="positive int"):
        kernel(diag, 0, "diag")
    with pytest.raises(ValueError, match="B must match A"):
        kernel({**diag, "B": diag["B"][:1]}, 5, "diag")
    with pytest.raises(ValueError, match="dt must be"):
        kernel({**diag, "dt": diag["dt"][:1]}, 5, "diag")
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        kernel(diag, 5, "diag", "pykeops")


# --- fft_conv -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("use_D", [True, False], ids=["D", "noD"])
@pytest.mark.parametrize("b,h,L,Lk", [(1, 1, 1, 1), (2, 3, 17, 17), (2, 4, 64, 100), (1, 5, 50, 7)],
                         ids=lambda v: str(v))
def test_fft_conv_matches_direct(b: int, h: int, L: int, Lk: int, use_D: bool) -> None:
    g = torch.Generator().manual_seed(L + Lk)
    u = torch.randn(b, h, L, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(h, Lk, generator=g, dtype=torch.float64, requires_grad=True)
    D = torch.randn(h, generator=g, dtype=torch.float64, requires_grad=True) if use_D else None
    gy = torch.randn(b, h, L, generator=g, dtype=torch.float64)
    inputs = [t for t in (u, k, D) if t is not None]
    results = {}
    for backend in ("fft", "direct"):
        y = kernels.fft_conv(u, k, D, backend=backend)
        results[backend] = (y, *torch.autograd.grad((y * gy).sum(), inputs))
    for a, ref in zip(results["fft"], results["direct"], strict=True):
        torch.testing.assert_close(a, ref, **F64)
    # The direct path itself against the definition y_t = Σ_{s≤t} k_s u_{t−s} (+ D u_t).
    kk = torch.nn.functional.pad(k, (0, max(0, L - Lk)))[:, :L]
    y_def = torch.stack([sum(kk[:, s] * u[..., t - s] for s in range(t + 1)) for t in range(L)], dim=-1)
    if D is not None:
        y_def = y_def + D[:, None] * u
    torch.testing.assert_close(results["direct"][0], y_def, **F64)


@pytest.mark.parametrize("use_D", [True, False], ids=["D", "noD"])
@pytest.mark.parametrize("b,h,L,Lk", [(2, 3, 17, 17), (2, 4, 64, 100), (1, 5, 50, 7)], ids=lambda v: str(v))
def test_compiled_fft_conv_is_one_op_matching_direct_in_float64(b: int, h: int, L: int, Lk: int, use_D: bool) -> None:
    """Under torch.compile the fft backend is the op ssmbench::fft_conv (no graph break) with an analytic backward:
    outputs and gradients equal the direct convolution's, for a transposed (strided) u as S4 passes it."""
    g = torch.Generator().manual_seed(L + Lk)
    u = torch.randn(b, L, h, generator=g, dtype=torch.float64).transpose(1, 2).requires_grad_()
    k = torch.randn(h, Lk, generator=g, dtype=torch.float64, requires_grad=True)
    D = torch.randn(h, generator=g, dtype=torch.float64, requires_grad=True) if use_D else None
    gy = torch.randn(b, h, L, generator=g, dtype=torch.float64)
    inputs = [t for t in (u, k, D) if t is not None]
    y_ref = kernels.fft_conv(u, k, D, backend="direct")
    ref = (y_ref, *torch.autograd.grad((y_ref * gy).sum(), inputs))
    kernels.fft_conv(u, k, D)  # resolve "auto" outside the trace, as compile_fn's eager first call does
    torch._dynamo.reset()
    conv = torch.compile(lambda u, k, D: kernels.fft_conv(u, k, D), backend="aot_eager", fullgraph=True)
    y = conv(u, k, D)
    for a, r in zip((y, *torch.autograd.grad((y * gy).sum(), inputs)), ref, strict=True):
        torch.testing.assert_close(a, r, **F64)
    torch.library.opcheck(torch.ops.ssmbench.fft_conv.default, (u, k, D))
    # float32 kernel with bfloat16 activations: gradients come back in each input's dtype
    low = (u.detach().bfloat16().requires_grad_(), k.detach().float().requires_grad_(),
           None if D is None else D.detach().float().requires_grad_())
    torch.library.opcheck(torch.ops.ssmbench.fft_conv.default, low)


def test_fft_conv_float32_and_bf16() -> None:
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 8, 1000, generator=g)
    k = torch.randn(8, 1000, generator=g) / 30
    ref = kernels.fft_conv(u.double(), k.double(), backend="direct")
    y = kernels.fft_conv(u, k)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=1e-4)
    yb = kernels.fft_conv(u.bfloat16(), k)
    assert yb.dtype == torch.bfloat16
    torch.testing.assert_close(yb.double(), ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item())


def test_fft_conv_is_causal_in_float32() -> None:
    g = torch.Generator().manual_seed(0)
    u = torch.randn(1, 4, 256, generator=g)
    k = torch.randn(4, 256, generator=g) / 10
    y = kernels.fft_conv(u, k)
    u2 = u.clone()
    u2[..., 100:] = torch.randn(1, 4, 156, generator=g)
    y2 = kernels.fft_conv(u2, k)
    torch.testing.assert_close(y2[..., :100], y[..., :100], rtol=0, atol=1e-5)
    assert (y2[..., 100:] - y[..., 100:]).abs().max() > 0.1  # the change does reach later outputs


def test_fft_conv_argument_errors() -> None:
    u, k = torch.randn(1, 3, 8), torch.randn(3, 8)
    with pytest.raises(ValueError, match=r"u must be \(b, h, l\)"):
        kernels.fft_conv(u[0], k)
    with pytest.raises(ValueError, match="k must be"):
        kernels.fft_conv(u, k[:2])
    with pytest.raises(ValueError, match="D must be"):
        kernels.fft_conv(u, k, torch.ones(2))
