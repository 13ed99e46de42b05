"""Peak memory of one call, measured in an untimed pass.

CUDA: ``reset_peak_memory_stats`` then ``max_memory_allocated`` (allocator peak).
CPU: peak RSS of the worker process. ``tracemalloc`` cannot see torch tensors, so the kernel's high-water mark
(VmHWM) is reset by writing 5 to /proc/self/clear_refs and read back after the call. Where that reset is not
possible the CPU peak is not reported (a stale high-water mark from an earlier case would be a wrong number).

:func:`memory_cap` limits what a case may allocate (``--max-memory``). CPU: the worker's address-space limit
(RLIMIT_AS) set to its current virtual size plus the cap, so an allocation beyond it fails at once with torch's
"can't allocate memory" error (an ``oom`` row) instead of pushing a shared machine into swap or the OOM killer.
Address space, not RSS: the mmap'd libraries and thread stacks are already in the current virtual size, and the
cap then charges every allocation at its full size when it is made, as a GPU's allocator does (a resident-set
guard could only kill the process after the memory was already taken). CUDA: the caching allocator's
per-process fraction of the device memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import resource
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class MemoryPeak:
    peak_bytes: int  # absolute peak (allocator peak on CUDA; process VmHWM on CPU)
    delta_bytes: int  # peak minus what was in use just before the call: what the call itself needed
    method: str


def _status_kb(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def release_free_heap() -> None:
    """Give freed heap pages back to the OS so they count again when the measured call touches them.

    torch's CPU allocator is glibc malloc: memory freed by earlier calls stays resident and is reused without
    raising RSS, which would make a call's peak look like zero. ``malloc_trim(0)`` returns it (all arenas).
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim, peaks may read low
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_cpu_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def measure_peak(fn: Callable[[], object], device: str) -> MemoryPeak | None:
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return MemoryPeak(peak, peak - before, "cuda_max_memory_allocated")
    release_free_heap()
    if not _STATUS.exists() or not reset_cpu_peak():
        return None
    before = _status_kb("VmRSS") * 1024
    fn()
    peak = _status_kb("VmHWM") * 1024
    return MemoryPeak(peak, max(0, peak - before), "vmhwm_clear_refs")


def virtual_size() -> int:
    """The process's current address-space size in bytes (VmSize)."""
    return _status_kb("VmSize") * 1024


@contextlib.contextmanager
def memory_cap(max_bytes: int, device: str) -> Iterator[None]:
    """Let the code inside allocate at most ``max_bytes`` more (0 = no cap); the previous limit is restored after."""
    if max_bytes <= 0:
        yield
        return
    if device == "cuda":
        total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, (torch.cuda.memory_allocated() + max_bytes) / total))
        try:
            yield
        finally:
            torch.cuda.empty_cache()
            torch.cuda.set_per_process_memory_fraction(1.0)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    release_free_heap()
    limit = virtual_size() + max_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))  # only the soft limit: it can be raised again after
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
