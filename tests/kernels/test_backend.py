"""Backend bookkeeping: the quick (probe-free) availability that ``ssmbench models`` lists; dtype-aware "auto"."""

import pytest
import torch

from ssmbench.kernels._backend import Backend, BackendUnavailable, quick_status, resolve
from ssmbench.kernels._tables import ATTENTION_BACKENDS


def test_quick_status_checks_requirements_without_probing():
    backends = (
        Backend("plain", "x:y"),
        Backend("present", "x:y", requires=("json", "cmd:sh"), probe="no.such.module:probe"),
        Backend("absent", "x:y", devices=("cuda",), requires=("json", "no_such_module_xyz", "cmd:no-such-cmd-xyz")),
    )
    status = {s.name: s for s in quick_status(backends)}
    assert status["plain"].available and status["present"].available  # the probe is never imported
    assert not status["absent"].available
    assert status["absent"].reason == "not installed: no_such_module_xyz, no-such-cmd-xyz"
    assert status["absent"].devices == ("cuda",)



def test_auto_on_cuda_skips_half_precision_only_attention_for_float32():
    name, _ = resolve("attention", ATTENTION_BACKENDS, "auto", "cuda", "float32")
    assert name == "efficient"


def test_auto_on_cuda_prefers_fused_attention_in_half_precision():
    name, _ = resolve("attention", ATTENTION_BACKENDS, "auto", "cuda", "bfloat16")
    assert name in ("cudnn", "flash")


def test_float64_falls_back_to_a_backend_without_dtype_limits():
    name, _ = resolve("attention", ATTENTION_BACKENDS, "auto", "cuda", "float64")
    assert name == "sdpa"


def test_explicit_backend_with_the_wrong_dtype_is_a_clear_error():
    with pytest.raises(BackendUnavailable, match="takes float16, bfloat16, not float32"):
        resolve("attention", ATTENTION_BACKENDS, "flash", "cuda", "float32")


def test_every_cpp_backend_is_opaque_to_torch_compile():
    """The C++ kernels (built by kernels/_cpp.py, which needs "cmd:c++") are called through ctypes; traced by dynamo,
    a ctypes call guards on raw data pointers and recompiles on every call (--compile ran 100x slower), so each
    such backend must be opaque (run behind torch.compiler.disable) or enter the graph as a registered torch op."""
    from ssmbench import kernels

    cpp = [(op, b) for op in kernels.ops() for b in kernels._op_backends(op) if "cmd:c++" in b.requires]
    assert {b.name for _, b in cpp} >= {"compiled", "cauchy_compiled"}
    for op, backend in cpp:
        if backend.graph_op is not None:
            # dispatch imports the probe's module and then the target (resolve); the op is registered by one of them
            kernels.load_target(backend.probe)
            kernels.load_target(backend.target)
            namespace, name = backend.graph_op.split("::")
            assert hasattr(getattr(torch.ops, namespace), name), f"{backend.graph_op} is not registered"
            continue
        assert backend.opaque, f"{op}:{backend.name} calls a C++ kernel through ctypes but is not marked opaque"
