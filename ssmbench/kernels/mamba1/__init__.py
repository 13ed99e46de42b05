"""Mamba-1 selective scan backends. See ``reference.py`` for the recurrence.

"auto" order: CPU compiled > chunked > reference; CUDA mamba_ssm > triton > chunked > reference.
"""

from ssmbench.kernels._backend import Backend

_M = "ssmbench.kernels.mamba1"

BACKENDS: tuple[Backend, ...] = (
    Backend(
        "reference",
        f"{_M}.reference:selective_scan_ref",
        priority={"cpu": 0, "cuda": 0},
        description="sequential loop over L (the oracle; float64-capable)",
    ),
    Backend(
        "chunked",
        f"{_M}.chunked:selective_scan_chunked",
        priority={"cpu": 1, "cuda": 1},
        description="pure PyTorch, chunks of ~sqrt(L) steps batched + carry pass; custom backward",
    ),
    Backend(
        "compiled",
        f"{_M}.compiled:selective_scan_compiled",
        devices=("cpu",),
        priority={"cpu": 2},
        probe=f"{_M}.compiled:probe",
        requires=("cmd:c++", "cmd:ninja"),
        opaque=True,
        description="C++/OpenMP kernel built on first use (needs a C++ compiler and ninja); fwd + bwd",
    ),
    Backend(
        "triton",
        f"{_M}.triton:selective_scan_triton",
        devices=("cuda",),
        priority={"cuda": 2},
        probe=f"{_M}.triton:probe",
        requires=("triton",),
        description="Triton chunked associative scan, time-major tiles; fwd + bwd kernels",
    ),
    Backend(
        "mamba_ssm",
        f"{_M}.upstream:selective_scan_mamba_ssm",
        devices=("cuda",),
        priority={"cuda": 3},
        probe=f"{_M}.upstream:probe",
        requires=("selective_scan_cuda", "mamba_ssm"),
        description="official CUDA kernel (mamba_ssm selective_scan_fn)",
    ),
)
