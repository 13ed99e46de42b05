"""Building and caching the C++/OpenMP CPU kernels (plain C ABI, loaded through ctypes).

``torch.utils.cpp_extension.load`` (ninja + the system C++ compiler) builds one source file into
``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/ssmbench/torch_extensions``, under a name hashed from the source, the
flags and the CPU's feature flags (a ``-march=native`` binary must not be reused on another CPU). No torch headers
are included, so a cold build takes seconds and a later process loads the cached library in milliseconds.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from ssmbench.env import cpuinfo_line

# Headers every kernel source may include (``#include "../cpu_math.h"``): hashed into each build name.
SHARED_HEADERS = (Path(__file__).with_name("cpu_math.h"),)
CFLAGS = ("-O3", "-march=native", "-fopenmp", "-ffp-contract=fast", "-Wno-psabi")
LDFLAGS = ("-fopenmp",)


def build_root() -> Path:
    env = os.environ.get("TORCH_EXTENSIONS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ssmbench" / "torch_extensions"


def cpu_fingerprint() -> str:
    flags = cpuinfo_line("flags", "Features")
    return f"{platform.machine()} {platform.processor() if flags is None else flags}"


def extension_name(prefix: str, source: Path, cflags=CFLAGS, ldflags=LDFLAGS) -> str:
    h = hashlib.sha256()
    headers = (header.read_bytes() for header in SHARED_HEADERS)
    for part in (source.read_bytes(), *headers, " ".join(tuple(cflags) + tuple(ldflags)).encode(),
                 cpu_fingerprint().encode(), os.environ.get("CXX", "c++").encode()):
        h.update(part)
    return f"{prefix}_{h.hexdigest()[:12]}"


def missing_toolchain() -> str | None:
    """Why nothing can be compiled here (no C++ compiler, no ninja), or None when the tools exist.

    This is the only reason a compiled backend may be absent: with the tools present, a failed build is a bug in
    the kernel's source (the tests treat it as a failure, not a skip)."""
    from torch.utils import cpp_extension

    # The ninja that `pip install ssmbench` brings lives beside this interpreter, which need not be on PATH
    # (e.g. `.venv/bin/pytest` run without activating the venv).
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        return f"no C++ compiler: '{cxx}' is not on PATH (install g++ or set CXX)"
    if not cpp_extension.is_ninja_available():
        return "ninja is not available (pip install ninja)"
    return None


def build(source: Path, name: str, build_dir: Path, cflags=CFLAGS, ldflags=LDFLAGS) -> None:
    """Compile ``source`` into ``build_dir/name.so``; a RuntimeError carries the compiler's first errors."""
    from torch.utils import cpp_extension

    if (missing := missing_toolchain()) is not None:
        raise RuntimeError(missing)
    build_dir.mkdir(parents=True, exist_ok=True)
    try:
        cpp_extension.load(name, sources=[str(source)], extra_cflags=list(cflags), extra_ldflags=list(ldflags),
                           build_directory=str(build_dir), is_python_module=False, verbose=False)
    except Exception as exc:  # keep the compiler's diagnostics ("file:line:col: error: ..."), not the commands
        lines = str(exc).splitlines()
        errors = [ln.strip() for ln in lines if "error:" in ln or "fatal" in ln.lower()] or lines[-3:]
        raise RuntimeError(f"building {source.name} in {build_dir} failed: {' | '.join(errors[:3])[:600]}") from exc


def library_path(name: str) -> tuple[Path, bool]:
    """(path of the .so, whether it must be built first). A lock file means another process is building right
    now: building again goes through ``load()``, which waits for it."""
    build_dir = build_root() / name
    so = build_dir / f"{name}.so"
    return so, not so.exists() or (build_dir / "lock").exists()


def load(source: Path, prefix: str, builder: Callable[[str, Path], None] | None = None):
    """The ctypes library of ``source``: loaded from the cache, built first when no build matches this source, the
    flags and the CPU. ``builder(name, build_dir)`` replaces :func:`build` (a module's own, patchable hook)."""
    import ctypes

    name = extension_name(prefix, source)
    so, stale = library_path(name)
    if stale:
        if builder is not None:
            builder(name, so.parent)
        else:
            build(source, name, so.parent)
    return ctypes.CDLL(str(so))


def probe(library: Callable[[], object]) -> str | None:
    """None when ``library()`` builds (or is cached) and loads here, else why not (a backend's probe)."""
    try:
        library()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
