"""Backend bookkeeping shared by every kernel op.

Each op module (``mamba1/``, ``mamba2/``, ``s4/``, ``sdpa.py``, ``conv.py``) declares its backends as a tuple
of :class:`Backend` entries. An entry names its implementation lazily (``"module:function"``) so that importing
``ssmbench.kernels`` never imports Triton or an optional upstream package, and it names an optional
``probe`` that says whether the backend can run here and, if not, why.

Dispatch rules (docs/kernels.md):
- ``backend="auto"`` picks the available backend with the highest priority for the device;
- an explicitly requested backend that cannot run raises :class:`BackendUnavailable` with the reason,
  never a silent fallback to a slower path.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run here; the message says what to install or change."""


@dataclass(frozen=True)
class Backend:
    name: str
    target: str  # "package.module:function"
    devices: tuple[str, ...] = ("cpu", "cuda")  # device types the backend runs on
    priority: dict[str, int] | None = None  # per-device preference for "auto"; higher wins; absent = never auto
    probe: str | None = None  # "module:function" returning None when usable, else a reason string
    description: str = ""
    # What the probe needs, checked without importing anything (``ssmbench models`` lists availability from
    # these alone, fast): Python modules (found by importlib, not imported) or "cmd:NAME" executables.
    requires: tuple[str, ...] = ()
    # dtypes the backend accepts ("float16", ...); None = every dtype. "auto" skips a backend that cannot take
    # the inputs' dtype (flash/cuDNN attention on float32), an explicit request for it is a clear error.
    dtypes: tuple[str, ...] | None = None
    # Calls that torch.compile cannot trace (a ctypes C++ kernel: dynamo would guard on its raw data pointers and
    # recompile every call): dispatch hands them out behind torch.compiler.disable, one clean graph break.
    opaque: bool = False
    # The alternative to opaque: the backend enters torch.compile graphs as this registered torch.library op
    # ("namespace::name", with its in-place arguments declared), so a compiled step stays one graph.
    graph_op: str | None = None

    def takes(self, dtype: str | None) -> bool:
        return dtype is None or self.dtypes is None or dtype in self.dtypes

    def rank(self, device_type: str) -> int | None:
        if self.priority is None:
            return None
        return self.priority.get(device_type)


@dataclass(frozen=True)
class BackendStatus:
    name: str
    available: bool
    reason: str
    devices: tuple[str, ...]
    description: str


def load_target(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def probe_reason(backend: Backend) -> str | None:
    """None when the backend's dependencies are importable here, else the reason it cannot run."""
    return None if backend.probe is None else _run_probe(backend.probe)


@cache
def _run_probe(probe: str) -> str | None:
    try:
        return load_target(probe)()
    except Exception as exc:  # a broken optional install is "unavailable", not a crash
        return f"{type(exc).__name__}: {exc}"


def missing_requirement(requirement: str) -> bool:
    """True when a ``Backend.requires`` entry is absent; "cmd:c++" honours $CXX, commands are also looked up
    beside the interpreter (a venv's ninja)."""
    if requirement.startswith("cmd:"):
        name = requirement[4:]
        if name == "c++":
            name = os.environ.get("CXX", name)
        path = os.pathsep.join([os.environ.get("PATH", ""), os.path.dirname(sys.executable)])
        return shutil.which(name, path=path) is None
    try:
        return importlib.util.find_spec(requirement) is None
    except (ImportError, ValueError):  # a parent package that fails to import, or a bad name
        return True


def quick_status(backends: tuple[Backend, ...]) -> list[BackendStatus]:
    """Like :func:`status`, from ``requires`` only (no probe runs, nothing heavy imported): "available" means
    the dependencies are installed; the device is not checked (``devices`` says where it runs)."""
    out = []
    for b in backends:
        absent = [r.removeprefix("cmd:") for r in b.requires if missing_requirement(r)]
        reason = f"not installed: {', '.join(absent)}" if absent else ""
        out.append(BackendStatus(b.name, not absent, reason, b.devices, b.description))
    return out


def status(backends: tuple[Backend, ...], device_type: str | None = None) -> list[BackendStatus]:
    out = []
    for b in backends:
        reason = probe_reason(b)
        if reason is None and device_type is not None and device_type not in b.devices:
            reason = f"runs on {', '.join(b.devices)} only, not {device_type}"
        out.append(BackendStatus(b.name, reason is None, reason or "", b.devices, b.description))
    return out


def resolve(op: str, backends: tuple[Backend, ...], name: str, device_type: str,
            dtype: str | None = None) -> tuple[str, Callable[..., Any]]:
    """Return (backend name, function) for ``name`` ("auto" or an explicit backend) on ``device_type`` for inputs
    of ``dtype`` (None: not checked)."""
    by_name = {b.name: b for b in backends}
    if name == "auto":
        ranked = sorted(
            (b for b in backends if b.rank(device_type) is not None and device_type in b.devices and b.takes(dtype)),
            key=lambda b: -(b.rank(device_type) or 0),
        )
        for b in ranked:
            if probe_reason(b) is None:
                return b.name, _load(b)
        raise BackendUnavailable(f"no available backend for {op} on {device_type}" + (f" for {dtype}" if dtype else ""))
    if name not in by_name:
        known = ", ".join(by_name)
        raise BackendUnavailable(f"unknown backend '{name}' for {op}; known: {known}")
    b = by_name[name]
    if device_type not in b.devices:
        raise BackendUnavailable(f"backend '{name}' for {op} runs on {', '.join(b.devices)}, not {device_type}")
    if not b.takes(dtype):
        raise BackendUnavailable(f"backend '{name}' for {op} takes {', '.join(b.dtypes or ())}, not {dtype}")
    reason = probe_reason(b)
    if reason is not None:
        raise BackendUnavailable(f"backend '{name}' for {op} is unavailable: {reason}")
    return b.name, _load(b)


def _load(backend: Backend) -> Callable[..., Any]:
    return _load_target(backend.target, backend.opaque)


@cache
def _load_target(target: str, opaque: bool) -> Callable[..., Any]:
    fn = load_target(target)
    if opaque:
        import torch

        fn = torch.compiler.disable(fn, recursive=True)
    return fn
