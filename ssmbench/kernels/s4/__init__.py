"""S4 / S4D kernels and the FFT long convolution.

Ops (public wrappers in ``ssmbench.kernels``):

    s4_kernel(dt, A, B, C, L, P=None, mode="diag"|"dplr", backend="auto") -> K (H, L)
    fft_conv(u, k, D=None, backend="auto") -> y (b, H, L)

Shapes: H channels, N real state size, N2 = N/2 conjugate pairs. dt: (H,) real; A (diag) or Λ (dplr), B, C,
P: (H, N2) complex; u: (b, H, L); k: (H, L_k); D: (H,). In mode "dplr" C is C̃ = C (I − Ā^L) for this L, the vector
S4 trains (``dplr.py``; conversions in ``ctilde.py``), so no backend forms Ā^L.

``s4_kernel`` backends: ``vandermonde`` (mode "diag", S4D with ZOH); for mode "dplr" (S4 with bilinear
discretisation, A = Λ − P P*) ``cauchy_compiled`` (C++ Cauchy sums, CPU), ``cauchy`` (chunked torch Cauchy sums
with an analytic backward) and ``cauchy_naive`` (S4's published naive product under autograd: the peer, never
"auto"); ``reference`` (both modes: materialise the discrete Ā, B̄ and run the recurrence). "auto" picks the first
available backend of the requested mode in ``AUTO_BY_MODE``.
"""

from ssmbench.kernels._backend import Backend

AUTO_BY_MODE = {"diag": ("vandermonde",), "dplr": ("cauchy_compiled", "cauchy")}

KERNEL_BACKENDS: tuple[Backend, ...] = (
    Backend(
        "vandermonde",
        "ssmbench.kernels.s4.diag:s4d_kernel_vandermonde",
        priority={"cpu": 1, "cuda": 1},
        description="S4D (mode diag, ZOH): chunked Vandermonde matmul, O(H·N·√L) memory",
    ),
    Backend(
        "cauchy",
        "ssmbench.kernels.s4.dplr:s4_kernel_cauchy",
        priority={"cpu": 1, "cuda": 1},
        description="S4 (mode dplr, bilinear; C is C̃): chunked Cauchy (analytic backward, no stored "
                    "reciprocals) + rank-1 Woodbury, irfft",
    ),
    Backend(
        "cauchy_compiled",
        "ssmbench.kernels.s4.dplr:s4_kernel_cauchy_compiled",
        devices=("cpu",),
        priority={"cpu": 2},
        probe="ssmbench.kernels.s4.compiled:probe",
        requires=("cmd:c++", "cmd:ninja"),
        graph_op="ssmbench::s4_cauchy_woodbury",
        description="as cauchy, with the Cauchy sums in C++/OpenMP (needs a C++ compiler and ninja)",
    ),
    Backend(
        "cauchy_naive",
        "ssmbench.kernels.s4.dplr:s4_kernel_cauchy_naive",
        description="as cauchy, with S4's naive Cauchy product under autograd (the peer; keeps reciprocals)",
    ),
    Backend(
        "reference",
        "ssmbench.kernels.s4.reference:s4_kernel_ref",
        priority={"cpu": 0, "cuda": 0},
        description="materialised Ā, B̄ and a loop over L (Krylov sequence; the oracle, both modes; dplr recovers C "
                    "from C̃ by a dense solve)",
    ),
)

FFT_CONV_BACKENDS: tuple[Backend, ...] = (
    Backend(
        "fft",
        "ssmbench.kernels.s4.fftconv:fft_conv_fft",
        priority={"cpu": 1, "cuda": 1},
        description="rfft/irfft with 2L zero padding, fp32 (fp64 for fp64 inputs)",
    ),
    Backend(
        "direct",
        "ssmbench.kernels.s4.fftconv:fft_conv_direct",
        priority={"cpu": 0, "cuda": 0},
        description="explicit causal convolution, O(L²) (the oracle)",
    ),
)
