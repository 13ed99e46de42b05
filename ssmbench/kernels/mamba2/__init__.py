"""Mamba-2 SSD backends (one signature, see ``reference.py``). "auto": CPU → compiled > chunked; CUDA → mamba_ssm >
triton > chunked. ``fla`` and ``minimal`` (the paper's listing, the peer the fast paths are measured against) are
never picked by "auto"; they run when asked for."""

from ssmbench.kernels._backend import Backend

# Default chunk length per device. CUDA: mamba_ssm's default. CPU: the chunked PyTorch path is fastest at Q = 64:
# single-thread CPU time at b=1, h=8, p=n=64, float32, L = 1k / 4k / 16k was 5.9 / 24 / 117 ms at Q=64 against
# 7.7 / 21 / 127 (Q=32), 10.6 / 37 / 149 (Q=128) and 22 / 65 / 243 (Q=256): the Q x Q intra-chunk work grows
# with Q, the per-chunk state work (and Python overhead) with 1/Q.
DEFAULT_CHUNK_SIZE = {"cuda": 256, "cpu": 64}


def default_chunk_size(device_type: str) -> int:
    """Chunk length to use on ``device_type`` when the caller has no preference."""
    return DEFAULT_CHUNK_SIZE.get(device_type, DEFAULT_CHUNK_SIZE["cuda"])


def probe_triton() -> str | None:
    try:
        import triton  # noqa: F401
    except Exception as exc:
        return f"pip install triton ({type(exc).__name__}: {exc})"
    return None


BACKENDS: tuple[Backend, ...] = (
    Backend("reference", "ssmbench.kernels.mamba2.reference:ssd_ref", priority={"cpu": 0, "cuda": 0},
            description="sequential recurrence over L (the oracle; float64-capable)"),
    Backend("chunked", "ssmbench.kernels.mamba2.chunked:ssd_chunked", priority={"cpu": 2, "cuda": 1},
            description="chunked SSD in PyTorch (stable segsum, CBᵀ per group, blocked for memory), "
                        "hand-written GEMM backward"),
    Backend("compiled", "ssmbench.kernels.mamba2.compiled:ssd_compiled", devices=("cpu",), priority={"cpu": 3},
            probe="ssmbench.kernels.mamba2.compiled:probe", requires=("cmd:c++", "cmd:ninja"),
            graph_op="ssmbench::ssd",
            description="C++/OpenMP register-blocked recurrence (needs a C++ compiler and ninja); "
                        "with gradients it saves chunk states for the GEMM backward (torch.library ops under "
                        "torch.compile)"),
    Backend("minimal", "ssmbench.kernels.mamba2.minimal:ssd_minimal",
            description="the Mamba-2 paper's ssd_minimal_discrete (Listing 1), einsum chunks (the peer)"),
    Backend("triton", "ssmbench.kernels.mamba2.triton:ssd_triton", devices=("cuda",), priority={"cuda": 2},
            probe="ssmbench.kernels.mamba2:probe_triton", requires=("triton",),
            description="Triton chunk pipeline forward; backward recomputes via the chunked path"),
    Backend("mamba_ssm", "ssmbench.kernels.mamba2.upstream:ssd_mamba_ssm", devices=("cuda",), priority={"cuda": 3},
            probe="ssmbench.kernels.mamba2.upstream:probe_mamba_ssm", requires=("mamba_ssm",),
            description="mamba_ssm mamba_chunk_scan_combined (official Triton)"),
    Backend("fla", "ssmbench.kernels.mamba2.upstream:ssd_fla", devices=("cuda",),
            probe="ssmbench.kernels.mamba2.upstream:probe_fla", requires=("fla",),
            description="fla chunk_simple_gla with the SSD mapping (q=C, k=B, v=x·dt, g=dt·A, scale=1)"),
)
