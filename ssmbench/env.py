"""Environment fingerprint stored with every run: versions, CPU/GPU, threads, git sha."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpuinfo_line(*prefixes: str) -> str | None:
    """The first line of /proc/cpuinfo that starts with one of ``prefixes``; "" when there is none, None when the
    file cannot be read (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return next((line for line in text.splitlines() if line.startswith(prefixes)), "")


def cpu_model() -> str:
    line = cpuinfo_line("model name")
    return line.split(":", 1)[1].strip() if line else platform.processor() or platform.machine()


def git_sha(path: Path | None = None) -> str | None:
    cwd = path or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{out}-dirty" if dirty else out
    except (OSError, subprocess.SubprocessError):
        return None


def gpu_info() -> dict[str, Any]:
    """GPU name, memory, driver via NVML when present (nvidia-ml-py); {} on CPU-only machines."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return {}
    try:
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            return {}
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(h)
        return {"gpu": name.decode() if isinstance(name, bytes) else name, "gpu_count": count,
                "gpu_memory_gb": round(pynvml.nvmlDeviceGetMemoryInfo(h).total / 2**30, 1),
                "driver": pynvml.nvmlSystemGetDriverVersion()}
    except Exception:
        return {}
    finally:
        pynvml.nvmlShutdown()


def fingerprint(with_torch: bool = True) -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "ssmbench": _version("ssmbench"),
        "git_sha": git_sha(),
        "triton": _version("triton"),
        "mamba_ssm": _version("mamba-ssm"),
        "causal_conv1d": _version("causal-conv1d"),
        "flash_attn": _version("flash-attn"),
        "fla": _version("flash-linear-attention"),
        "numpy": _version("numpy"),
    }
    if with_torch:
        import torch

        info.update({"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                     "cuda": torch.version.cuda, "cpu_capability": torch.backends.cpu.get_cpu_capability()})
        if torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name(0)
    info.update(gpu_info())
    return info
