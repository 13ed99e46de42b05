"""Mamba-1 selective scan backends (see ``reference.py`` for the recurrence) and decode-step backends.

Scan "auto" order: CPU compiled > chunked > reference; CUDA mamba_ssm > triton > chunked > reference.
Step "auto" order: CPU compiled (float64, float32, bfloat16) > torch; CUDA torch.
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
        graph_op="ssmbench::selective_scan",
        description="C++/OpenMP kernel built on first use (needs a C++ compiler and ninja); fwd + bwd "
                    "(a torch.library op under torch.compile)",
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

STEP_BACKENDS: tuple[Backend, ...] = (
    Backend(
        "torch",
        f"{_M}.step:mamba_step_torch",
        priority={"cpu": 1, "cuda": 1},
        description="the decode step as PyTorch ops (the oracle)",
    ),
    Backend(
        "compiled",
        f"{_M}.step:mamba_step_compiled",
        devices=("cpu",),
        priority={"cpu": 2},
        probe=f"{_M}.step:probe",
        requires=("cmd:c++", "cmd:ninja"),
        dtypes=("float64", "float32", "bfloat16"),
        graph_op="ssmbench::mamba1_step",
        description="the whole mixer step in one C++ call (a torch.library op under torch.compile)",
    ),
)
