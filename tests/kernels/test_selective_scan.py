"""Mamba-1 selective scan: every backend against the sequential reference (ssmbench.kernels.mamba1).

float64 comparisons are tight (outputs, last states and the gradient of every input, the reference's autograd
being the ground truth); float32 and bf16 use upstream-style tolerances. Lengths hit 1, below / at / above a
chunk boundary and several chunks: the chunked backend runs with 8-step chunks and the compiled backend with
8-step backward checkpoints (monkeypatched; one case keeps the default 64). The Triton kernels run on CPU through
the interpreter (TRITON_INTERPRET=1, set before the module is imported, since Triton picks the interpreter at
``@triton.jit`` time) at tiny shapes.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest
import torch

from ssmbench import kernels
from ssmbench.kernels import BackendUnavailable
from ssmbench.kernels.mamba1 import compiled as compiled_mod
from ssmbench.kernels.mamba1.chunked import selective_scan_chunked
from ssmbench.kernels.mamba1.reference import selective_scan_ref

F64 = {"rtol": 1e-9, "atol": 1e-10}
F32 = {"rtol": 1e-4, "atol": 1e-4}
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
OPTIONS = {
    "plain": {},
    "D": {"D": True},
    "z": {"z": True},
    "bias-softplus": {"delta_bias": True, "delta_softplus": True},
    "all": {"D": True, "z": True, "delta_bias": True, "delta_softplus": True},
}
# (b, d, length, n, g, options); g None = B, C of shape (b, n, l). Chunks / checkpoints are 8 steps.
CASES = {
    "L1-g1-all": (2, 4, 1, 16, 1, "all"),
    "L7-3d-plain": (1, 3, 7, 5, None, "plain"),
    "L8-g2-all": (2, 4, 8, 16, 2, "all"),
    "Q-1-g2-z": (1, 4, 7, 8, 2, "z"),
    "Q+1-3d-D": (2, 2, 9, 3, None, "D"),
    "4chunks-g2-bias": (1, 6, 29, 16, 2, "bias-softplus"),
    "4chunks-g3-n70": (1, 6, 27, 70, 3, "all"),
}


def make_inputs(b: int, d: int, length: int, n: int, g: int | None, dtype: torch.dtype = torch.float64,
                seed: int = 0, D: bool = False, z: bool = False, delta_bias: bool = False,
                delta_softplus: bool = False) -> dict:
    """Random arguments; delta is positive (or pre-softplus around -1), A in [-1.5, -0.1]."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, dtype=torch.float64).to(dtype)

    bc = (b, n, length) if g is None else (b, g, n, length)
    return {
        "u": randn(b, d, length),
        "delta": randn(b, d, length) - 1 if delta_softplus else 0.05 + 0.5 * rand(b, d, length),
        "A": -(0.1 + 1.4 * rand(d, n)), "B": randn(*bc), "C": randn(*bc),
        "D": randn(d) if D else None, "z": randn(b, d, length) if z else None,
        "delta_bias": 0.5 * rand(d) if delta_bias else None, "delta_softplus": delta_softplus,
    }


def run(fn, args: dict, with_grad: bool = True, seed: int = 1):
    """(y, last_state, {name: grad}) of fn on fresh leaf copies of ``args``."""
    leaves = {k: (v.detach().clone().requires_grad_(with_grad) if isinstance(v, torch.Tensor) else v)
              for k, v in args.items()}
    y, last = fn(*(leaves[k] for k in NAMES[:5]), D=leaves["D"], z=leaves["z"], delta_bias=leaves["delta_bias"],
                 delta_softplus=leaves["delta_softplus"], return_last_state=True)
    grads = {}
    if with_grad:
        gen = torch.Generator().manual_seed(seed)
        gy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.device, y.dtype)
        gl = torch.randn(last.shape, generator=gen, dtype=torch.float64).to(last.device, last.dtype)
        wanted = [k for k in NAMES if leaves[k] is not None]
        grads = dict(zip(wanted, torch.autograd.grad((y, last), [leaves[k] for k in wanted], (gy, gl)), strict=True))
    return y.detach(), last.detach(), grads


def assert_same(got, want, tol: dict) -> None:
    y, last, grads = got
    y_ref, last_ref, grads_ref = want
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    torch.testing.assert_close(y, y_ref, **tol, msg=lambda m: f"y: {m}")
    assert last.shape == last_ref.shape
    torch.testing.assert_close(last.to(last_ref.dtype), last_ref, **tol, msg=lambda m: f"last state: {m}")
    assert grads.keys() == grads_ref.keys()
    for k, gk in grads.items():
        assert gk.shape == grads_ref[k].shape, k
        torch.testing.assert_close(gk.to(grads_ref[k].dtype), grads_ref[k], **tol, msg=lambda m, k=k: f"d{k}: {m}")


def case_args(case: tuple, dtype: torch.dtype = torch.float64) -> dict:
    b, d, length, n, g, options = case
    return make_inputs(b, d, length, n, g, dtype=dtype, **OPTIONS[options])


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch, require_compiled):
    """The compiled backend with 8-step checkpoints; a failed build fails (skips only without a toolchain)."""
    require_compiled(compiled_mod.probe)
    monkeypatch.setattr(compiled_mod, "CHECKPOINT_EVERY", 8)
    return compiled_mod.selective_scan_compiled


def chunked8(*args, **kw):
    return selective_scan_chunked(*args, chunk_size=8, **kw)


def backend_fn(backend: str, request: pytest.FixtureRequest):
    """chunked (8-step chunks) always; compiled through its fixture, so only compiled cases skip without it."""
    return request.getfixturevalue("compiled") if backend == "compiled" else chunked8


# ---- float64 against the oracle --------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_chunked_matches_reference(case: tuple) -> None:
    args = case_args(case)
    assert_same(run(chunked8, args), run(selective_scan_ref, args), F64)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_compiled_matches_reference(case: tuple, compiled) -> None:
    args = case_args(case)
    assert_same(run(compiled, args), run(selective_scan_ref, args), F64)


@pytest.mark.parametrize("backend", ["chunked", "compiled"])
def test_mixed_B_C_layouts(backend: str, request: pytest.FixtureRequest) -> None:
    """B shared by all channels (b, n, l) with C in two groups (b, 2, n, l), as mamba_ssm allows."""
    args = make_inputs(2, 4, 12, 8, 2, D=True)
    args["B"] = args["B"][:, 0]
    fn = backend_fn(backend, request)
    assert_same(run(fn, args), run(selective_scan_ref, args), F64)


@pytest.mark.parametrize("chunk", [1, 3, None], ids=["Q1", "Q3", "Qauto"])
def test_chunked_chunk_size_invariance(chunk: int | None) -> None:
    args = make_inputs(1, 4, 70, 4, 2, D=True, z=True)
    fn = lambda *a, **kw: selective_scan_chunked(*a, chunk_size=chunk, **kw)  # noqa: E731
    assert_same(run(fn, args), run(selective_scan_ref, args), F64)


def test_compiled_default_checkpoints_and_state_sizes(require_compiled) -> None:
    """The default 64-step checkpoints over several chunks, with n = 32 (specialised) and n = 33 (padded)."""
    require_compiled(compiled_mod.probe)
    for n in (32, 33):
        args = make_inputs(1, 2, 150, n, 1, D=True, delta_bias=True, delta_softplus=True)
        assert_same(run(compiled_mod.selective_scan_compiled, args), run(selective_scan_ref, args), F64)


def test_compiled_gradcheck(compiled) -> None:
    args = make_inputs(1, 2, 5, 3, 1, D=True, z=True, delta_bias=True, delta_softplus=True)
    leaves = [args[k].clone().requires_grad_() for k in NAMES]

    def f(u, delta, A, B, C, D, z, bias):
        return compiled(u, delta, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True, return_last_state=True)

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", ["L1-g1-all", "Q+1-3d-D", "4chunks-g3-n70"])
def test_compiled_op_is_one_graph_matching_reference_in_float64(case: str, compiled) -> None:
    """Under torch.compile the C++ scan is the op ssmbench::selective_scan with its C++ backward op (no graph break, no
    torch.compiler.disable): outputs, last state and every gradient equal the reference; only y or only the last
    state used, and no gradient wanted (no checkpoints saved) too."""
    args = case_args(CASES[case])
    want = run(selective_scan_ref, args)
    torch._dynamo.reset()
    scan = torch.compile(compiled, backend="aot_eager", fullgraph=True)
    assert_same(run(scan, args), want, F64)
    leaves = {k: v.clone().requires_grad_() if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    for used in (0, 1):  # backward from y alone, then from the last state alone
        out = scan(*(leaves[k] for k in NAMES[:5]), D=leaves["D"], z=leaves["z"], delta_bias=leaves["delta_bias"],
                   delta_softplus=args["delta_softplus"], return_last_state=True)[used]
        (du,) = torch.autograd.grad(out.sum(), leaves["u"])
        u_ref = args["u"].clone().requires_grad_()
        ref = selective_scan_ref(u_ref, *(args[k] for k in NAMES[1:5]), D=args["D"], z=args["z"],
                                 delta_bias=args["delta_bias"], delta_softplus=args["delta_softplus"],
                                 return_last_state=True)[used]
        torch.testing.assert_close(du, torch.autograd.grad(ref.sum(), u_ref)[0], **F64)
    with torch.no_grad():
        y = scan(*(args[k] for k in NAMES[:5]), D=args["D"], z=args["z"], delta_bias=args["delta_bias"],
                 delta_softplus=args["delta_softplus"])
    torch.testing.assert_close(y, want[0], **F64)
    g = args["B"].shape[1] if args["B"].dim() == 4 else 1
    core = [compiled_mod.as_groups(args[k], g) if k in ("B", "C") else args[k] for k in NAMES]  # the op's (b, g, n, l)
    core = [None if t is None else t.clone().requires_grad_() for t in core]
    torch.library.opcheck(torch.ops.ssmbench.selective_scan.default, (*core, args["delta_softplus"], True))
    torch.library.opcheck(torch.ops.ssmbench.selective_scan.default,
                          (*(None if t is None else t.detach() for t in core), args["delta_softplus"], False))


@pytest.mark.parametrize("backend", ["compiled", "chunked"])
def test_unused_outputs_and_no_grad(backend: str, request: pytest.FixtureRequest) -> None:
    """Backward with only the last state used, and forward without autograd."""
    args = make_inputs(2, 4, 20, 8, 2, D=True, z=True)
    fn = backend_fn(backend, request)
    u = args["u"].clone().requires_grad_()
    y, last = fn(u, *(args[k] for k in NAMES[1:5]), D=args["D"], z=args["z"], return_last_state=True)
    (gu_last,) = torch.autograd.grad(last.sum(), u)
    u_ref = args["u"].clone().requires_grad_()
    _, last_ref = selective_scan_ref(u_ref, *(args[k] for k in NAMES[1:5]), D=args["D"], z=args["z"],
                                     return_last_state=True)
    torch.testing.assert_close(gu_last, torch.autograd.grad(last_ref.sum(), u_ref)[0], **F64)
    with torch.no_grad():
        y2 = fn(*(args[k] for k in NAMES[:5]), D=args["D"], z=args["z"])
    torch.testing.assert_close(y2, y.detach(), rtol=0, atol=0)


# ---- float32 / bf16 and layouts ------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["compiled", "chunked"])
def test_float32_close_to_float64_reference(backend: str, request: pytest.FixtureRequest) -> None:
    fn = backend_fn(backend, request)
    args64 = make_inputs(2, 8, 100, 16, 2, D=True, z=True, delta_bias=True, delta_softplus=True)
    args32 = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in args64.items()}
    y, last, grads = run(fn, args32)
    assert y.dtype == torch.float32 and last.dtype == torch.float32
    want = run(selective_scan_ref, args64)
    assert_same((y.double(), last.double(), {k: g.double() for k, g in grads.items()}), want,
                {"rtol": 1e-4, "atol": 3e-4})


@pytest.mark.parametrize("length", [1, 15, 16, 17, 33, 64, 65])
def test_compiled_float32_n16_blocks_and_extreme_decays(length: int, compiled) -> None:
    """float32 with n = 16 runs the AVX-512 path (16-step blocks, tail steps, vscalef exp): lengths around the
    block, and decays from exp(-300) (underflow to 0) to exp(0), against the float64 reference."""
    args64 = make_inputs(1, 5, length, 16, 1, D=True, z=True)
    args64["delta"][0, 0] = 200.0  # channel 0: every step forgets the state (exp(200 A) = 0 in float32)
    args64["A"][0] = -1.5
    args64["A"][1] = 0.0  # channel 1: no decay at all
    args32 = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in args64.items()}
    y, last, grads = run(compiled, args32)
    want = run(selective_scan_ref, args64)
    assert_same((y.double(), last.double(), {k: g.double() for k, g in grads.items()}), want,
                {"rtol": 1e-4, "atol": 1e-3})


@pytest.mark.parametrize("backend", ["compiled", "chunked"])
def test_time_major_views_and_bf16(backend: str, request: pytest.FixtureRequest) -> None:
    """Non-contiguous (b, l, d)-major views, as the Mamba block passes them, and bf16 inputs."""
    fn = backend_fn(backend, request)
    args = make_inputs(2, 6, 33, 4, None, dtype=torch.float32, D=True, z=True, delta_bias=True, delta_softplus=True)
    views = dict(args)
    for k in ("u", "delta", "z", "B", "C"):
        views[k] = args[k].transpose(1, 2).contiguous().transpose(1, 2)
    assert not views["delta"].is_contiguous()
    torch.testing.assert_close(run(fn, views, with_grad=False)[0], run(fn, args, with_grad=False)[0], **F32)
    bf = {k: v.bfloat16() if k in ("u", "delta", "z", "B", "C") else v for k, v in args.items()}
    y = run(fn, bf, with_grad=False)[0]
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), run(selective_scan_ref, bf, with_grad=False)[0].float(),
                               rtol=3e-2, atol=5e-2)


# ---- the compiled backend's build --------------------------------------------------------------------------------
@pytest.fixture
def fresh_build(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """An empty build directory and a cleared library cache, restored afterwards."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    compiled_mod.library.cache_clear()
    yield tmp_path
    compiled_mod.library.cache_clear()


def test_compiled_probe_reports_a_missing_compiler(fresh_build, monkeypatch: pytest.MonkeyPatch,
                                                   require_compiled) -> None:
    monkeypatch.setenv("CXX", "no-such-compiler-ssmbench")
    reason = compiled_mod.probe()
    assert reason is not None and "no C++ compiler" in reason
    # no toolchain: the compiled tests skip, unless CI's switch demands the compiled backend
    monkeypatch.delenv("SSMBENCH_REQUIRE_COMPILED", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"no C\+\+ toolchain here"):
        require_compiled(compiled_mod.probe)
    monkeypatch.setenv("SSMBENCH_REQUIRE_COMPILED", "1")
    with pytest.raises(pytest.fail.Exception, match="compiled backend required"):
        require_compiled(compiled_mod.probe)


def test_compiled_probe_reports_a_build_error(monkeypatch: pytest.MonkeyPatch, tmp_path, require_compiled) -> None:
    require_compiled(compiled_mod.probe)  # the real (cached) build first: is there a working toolchain at all?
    broken = tmp_path / "broken.cpp"
    broken.write_text("int main( { return 0; }\n")
    monkeypatch.setattr(compiled_mod, "_SOURCE", broken)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    compiled_mod.library.cache_clear()
    try:
        reason = compiled_mod.probe()
    finally:
        compiled_mod.library.cache_clear()
    assert reason is not None and "broken.cpp" in reason and "error:" in reason
    # ... and with a toolchain present such a build error is a test failure, never a skip
    monkeypatch.delenv("SSMBENCH_REQUIRE_COMPILED", raising=False)
    with pytest.raises(pytest.fail.Exception, match=r"does not build although a C\+\+ toolchain exists"):
        try:
            require_compiled(compiled_mod.probe)
        finally:
            compiled_mod.library.cache_clear()


def test_compiled_build_is_cached(monkeypatch: pytest.MonkeyPatch, require_compiled) -> None:
    """A second start loads the cached library without building (here: building would raise)."""
    require_compiled(compiled_mod.probe)
    compiled_mod.library.cache_clear()

    def no_build(*_: object) -> None:
        raise AssertionError("rebuilt although a cached build exists")

    monkeypatch.setattr(compiled_mod, "_build", no_build)
    try:
        assert compiled_mod.probe() is None
    finally:
        compiled_mod.library.cache_clear()


# ---- dispatch and validation -------------------------------------------------------------------------------------
def test_backend_listing_and_auto_dispatch_on_cpu(require_compiled) -> None:
    require_compiled(compiled_mod.probe)  # auto must pick the compiled scan, never silently the chunked one
    status = {s.name: s for s in kernels.backends("selective_scan", "cpu")}
    assert {"reference", "chunked", "compiled", "triton", "mamba_ssm"} <= status.keys()
    assert status["reference"].available and status["chunked"].available
    assert not status["triton"].available and status["triton"].reason
    assert not status["mamba_ssm"].available and status["mamba_ssm"].reason
    name, _ = kernels.dispatch("selective_scan", "auto", "cpu")
    assert name == "compiled" and status["compiled"].available
    with pytest.raises(BackendUnavailable, match="cuda"):
        kernels.dispatch("selective_scan", "triton", "cpu")
    args = make_inputs(1, 2, 5, 4, None, D=True)
    y = kernels.selective_scan(*(args[k] for k in NAMES[:5]), D=args["D"], backend="chunked")
    torch.testing.assert_close(y, run(selective_scan_ref, args, with_grad=False)[0], **F64)


def _bad_inputs() -> dict:
    a = make_inputs(1, 4, 6, 3, 2)
    return {
        "delta-shape": dict(a, delta=a["delta"][..., :5]),
        "A-shape": dict(a, A=a["A"][:3]),
        "groups-not-dividing-d": dict(a, B=a["B"].repeat(1, 2, 1, 1)[:, :3], C=a["C"].repeat(1, 2, 1, 1)[:, :3]),
        "B-C-groups-differ": dict(a, C=a["C"][:, :1].repeat(1, 4, 1, 1)),
        "D-shape": dict(a, D=torch.ones(3, dtype=torch.float64)),
        "complex-A": dict(a, A=torch.complex(a["A"], a["A"])),
    }


BAD_INPUT_MESSAGES = {"delta-shape": "delta must match u", "A-shape": r"A must be \(d=4, n\)",
                      "groups-not-dividing-d": "must be divisible by groups",
                      "B-C-groups-differ": "different group counts", "D-shape": r"D must be \(d,\)",
                      "complex-A": "complex A is not supported"}


@pytest.mark.parametrize("bad", _bad_inputs().keys())
@pytest.mark.parametrize("backend", ["reference", "chunked", "compiled"])
def test_inputs_are_validated(backend: str, bad: str) -> None:
    fn = {"reference": selective_scan_ref, "chunked": selective_scan_chunked,
          "compiled": compiled_mod.selective_scan_compiled}[backend]
    with pytest.raises(ValueError, match=BAD_INPUT_MESSAGES[bad]):
        run(fn, _bad_inputs()[bad], with_grad=False)


# ---- Triton: interpreter on CPU, compiled on CUDA ------------------------------------------------------------
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")


def triton_module() -> ModuleType:
    pytest.importorskip("triton")
    mod = importlib.import_module("ssmbench.kernels.mamba1.triton")
    if DEVICE == "cpu" and type(mod._fwd_kernel).__name__ != "InterpretedFunction":
        mod = importlib.reload(mod)  # imported earlier without the interpreter
    return mod


TRITON_CASES = {  # tiny: the interpreter runs every program in Python; 8-step tiles
    "L1-g1-all": (1, 4, 1, 16, 1, "all"),
    "3tiles-g2-all": (2, 4, 19, 8, 2, "all"),
    "2tiles-3d-n5-plain": (1, 6, 16, 5, None, "plain"),
}


@pytest.mark.parametrize("case", TRITON_CASES.values(), ids=TRITON_CASES.keys())
def test_triton_matches_reference(case: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = triton_module()
    monkeypatch.setattr(mod, "BLOCK_T", 8)
    args = case_args(case)
    dev = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    y, last, grads = run(mod.selective_scan_triton, dev)
    assert_same((y.cpu(), last.cpu(), {k: g.cpu() for k, g in grads.items()}), run(selective_scan_ref, args), F64)


def test_triton_float32_time_major() -> None:
    mod = triton_module()
    args = make_inputs(1, 8, 20, 16, 1, dtype=torch.float32, D=True, z=True, delta_bias=True, delta_softplus=True)
    dev = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    for k in ("u", "delta", "z"):  # (b, l, d) storage, as nn.Linear produces
        dev[k] = dev[k].transpose(1, 2).contiguous().transpose(1, 2)
    y, last, _ = run(mod.selective_scan_triton, dev, with_grad=False)
    y_ref, last_ref, _ = run(selective_scan_ref, args, with_grad=False)
    torch.testing.assert_close(y.cpu(), y_ref, **F32)
    torch.testing.assert_close(last.cpu(), last_ref, **F32)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["triton", "mamba_ssm", "chunked"])
def test_gpu_backends_match_reference(backend: str) -> None:
    status = {s.name: s for s in kernels.backends("selective_scan", "cuda")}
    if not status[backend].available:
        pytest.skip(f"{backend}: {status[backend].reason}")
    args = make_inputs(2, 8, 300, 16, 2, dtype=torch.float32, D=True, z=True, delta_bias=True, delta_softplus=True)
    _, fn = kernels.dispatch("selective_scan", backend, "cuda")
    dev = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    y, last, grads = run(fn, dev)
    y_ref, last_ref, grads_ref = run(selective_scan_ref, args)
    torch.testing.assert_close(y.cpu(), y_ref, rtol=6e-4, atol=2e-3)
    torch.testing.assert_close(last.cpu(), last_ref, rtol=6e-4, atol=2e-3)
    for k, g in grads.items():
        torch.testing.assert_close(g.cpu(), grads_ref[k], rtol=5e-3, atol=1e-2, msg=lambda m, k=k: f"d{k}: {m}")


def test_chunked_float32_does_not_overflow_with_large_decays() -> None:
    """dt·|A| summed over a chunk far beyond 88 (exp overflow in float32) stays finite and exact."""
    args = make_inputs(1, 2, 64, 4, 1, dtype=torch.float32)
    args["delta"] = torch.full_like(args["delta"], 5.0)
    args["A"] = torch.full_like(args["A"], -10.0)  # 50 per step, 3200 per 64-step chunk
    y, last, _ = run(lambda *a, **kw: selective_scan_chunked(*a, chunk_size=64, **kw), args, with_grad=False)
    y_ref, last_ref, _ = run(selective_scan_ref, args, with_grad=False)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, y_ref, **F32)
    torch.testing.assert_close(last, last_ref, **F32)
