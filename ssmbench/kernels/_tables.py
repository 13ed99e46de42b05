"""Backend tables of the ops implemented in single torch-importing modules (``sdpa.py``, ``conv.py``).

The tables live here, torch-free, so listing backend names (``ssmbench models``, spec validation) never imports
torch; ``sdpa.BACKENDS`` and ``conv.BACKENDS`` are these same tuples.
"""

from ssmbench.kernels._backend import Backend

ATTENTION_BACKENDS: tuple[Backend, ...] = (
    Backend("sdpa", "ssmbench.kernels.sdpa:attention_sdpa", priority={"cpu": 2, "cuda": 1},
            description="torch SDPA, torch picks the kernel (recorded as 'sdpa')"),
    Backend("flash", "ssmbench.kernels.sdpa:attention_flash", devices=("cuda",), priority={"cuda": 4},
            dtypes=("float16", "bfloat16"),
            description="SDPA forced to FLASH_ATTENTION (fp16/bf16, sm80+)"),
    Backend("cudnn", "ssmbench.kernels.sdpa:attention_cudnn", devices=("cuda",), priority={"cuda": 5},
            dtypes=("float16", "bfloat16"),
            probe="ssmbench.kernels.sdpa:probe_cudnn", description="SDPA forced to CUDNN_ATTENTION"),
    Backend("efficient", "ssmbench.kernels.sdpa:attention_efficient", devices=("cuda",), priority={"cuda": 3},
            dtypes=("float16", "bfloat16", "float32"),
            description="SDPA forced to EFFICIENT_ATTENTION (memory-efficient, fp32 ok)"),
    Backend("math", "ssmbench.kernels.sdpa:attention_math", priority={"cpu": 0, "cuda": 0},
            description="SDPA forced to MATH (materialises L x L)"),
    Backend("reference", "ssmbench.kernels.sdpa:attention_ref",
            description="explicit softmax(QK^T/sqrt(d)) V (the oracle)"),
    Backend("flash_attn", "ssmbench.kernels.sdpa:attention_flash_attn", devices=("cuda",),
            dtypes=("float16", "bfloat16"),
            probe="ssmbench.kernels.sdpa:probe_flash_attn", requires=("flash_attn",),
            description="Dao-AILab flash-attn package"),
)


CONV_BACKENDS: tuple[Backend, ...] = (
    Backend("torch", "ssmbench.kernels.conv:causal_conv1d_torch", priority={"cpu": 1, "cuda": 1},
            description="F.conv1d(groups=d) with left padding"),
    Backend("reference", "ssmbench.kernels.conv:causal_conv1d_ref", priority={"cpu": 0, "cuda": 0},
            description="explicit sum over taps (the oracle)"),
    Backend("causal_conv1d", "ssmbench.kernels.conv:causal_conv1d_upstream", devices=("cuda",),
            probe="ssmbench.kernels.conv:probe_upstream", requires=("causal_conv1d",),
            description="Dao-AILab causal-conv1d CUDA kernel"),
)
