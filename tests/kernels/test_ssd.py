"""Mamba-2 SSD: the chunked and Triton paths against the sequential reference, and cross-family identities.

float64 comparisons are tight (outputs, final states and the gradient of every input); float32 uses upstream-style
tolerances. The Triton pipeline runs on CPU through the interpreter (TRITON_INTERPRET=1, set before the module is
imported since Triton picks the interpreter at ``@triton.jit`` time) at tiny shapes; on a GPU it runs compiled.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F

from ssmbench import kernels
from ssmbench.kernels import BackendUnavailable
from ssmbench.kernels.mamba2 import backward as backward_mod
from ssmbench.kernels.mamba2 import chunked as chunked_mod
from ssmbench.kernels.mamba2 import compiled as compiled_ssd_mod
from ssmbench.kernels.mamba2.chunked import ssd_chunked
from ssmbench.kernels.mamba2.minimal import ssd_minimal
from ssmbench.kernels.mamba2.reference import ssd_ref, stable_segsum

F64 = {"rtol": 1e-9, "atol": 1e-10}
F32 = {"rtol": 2e-4, "atol": 2e-4}
NAMES = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states")
OPTION_SETS = {
    "plain": {},
    "D": {"D": "h"},
    "Dhp-z": {"D": "hp", "z": True},
    "bias-softplus": {"dt_bias": True, "dt_softplus": True},
    "init": {"initial_states": True},
    "all": {"D": "h", "z": True, "dt_bias": True, "dt_softplus": True, "initial_states": True},
}


def make_inputs(b: int, length: int, h: int, p: int, g: int, n: int, dtype: torch.dtype = torch.float64,
                seed: int = 0, D: str | None = None, z: bool = False, dt_bias: bool = False,
                dt_softplus: bool = False, initial_states: bool = False) -> dict:
    """Random SSD arguments; dt is positive (or pre-softplus around -1), A in [-e, -1]."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    dt = randn(b, length, h) - 1 if dt_softplus else F.softplus(randn(b, length, h) - 1)
    return {
        "x": randn(b, length, h, p), "dt": dt, "A": -torch.exp(torch.rand(h, generator=gen, dtype=dtype)),
        "B": randn(b, length, g, n), "C": randn(b, length, g, n),
        "D": {None: None, "h": randn(h), "hp": randn(h, p)}[D],
        "z": randn(b, length, h, p) if z else None,
        "dt_bias": 0.5 * randn(h) if dt_bias else None,
        "initial_states": randn(b, h, p, n) if initial_states else None,
        "dt_softplus": dt_softplus,
    }


def run(fn, args: dict, chunk: int, with_grad: bool = True, seed: int = 1):
    """(y, final_states, {name: grad}) of fn on fresh leaf copies of ``args``."""
    leaves = {k: (v.detach().clone().requires_grad_(with_grad) if isinstance(v, torch.Tensor) else v)
              for k, v in args.items()}
    y, final = fn(leaves["x"], leaves["dt"], leaves["A"], leaves["B"], leaves["C"], chunk, D=leaves["D"],
                  z=leaves["z"], dt_bias=leaves["dt_bias"], dt_softplus=leaves["dt_softplus"],
                  initial_states=leaves["initial_states"], return_final_states=True)
    grads = {}
    if with_grad:
        gen = torch.Generator().manual_seed(seed)
        gy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.dtype)
        gf = torch.randn(final.shape, generator=gen, dtype=torch.float64).to(final.dtype)
        wanted = [k for k in NAMES if leaves[k] is not None]
        grads = dict(zip(wanted, torch.autograd.grad((y, final), [leaves[k] for k in wanted], (gy, gf)), strict=True))
    return y.detach(), final.detach(), grads


def assert_same(got, want, tol: dict) -> None:
    y, final, grads = got
    y_ref, final_ref, grads_ref = want
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    torch.testing.assert_close(y, y_ref, **tol, msg=lambda m: f"y: {m}")
    torch.testing.assert_close(final, final_ref.to(final.dtype), **tol, msg=lambda m: f"final states: {m}")
    assert grads.keys() == grads_ref.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_ref[name].to(grad.dtype), **tol, msg=lambda m, n=name: f"d{n}: {m}")


def as_dtype(args: dict, dtype: torch.dtype) -> dict:
    return {k: v.to(dtype) if isinstance(v, torch.Tensor) else v for k, v in args.items()}


Q = 8
LENGTHS = {"L1": 1, "L7": 7, "Q-1": Q - 1, "Q+1": Q + 1, "4Q+3": 4 * Q + 3}


@pytest.mark.parametrize("g", [1, 2], ids=lambda g: f"g{g}")
@pytest.mark.parametrize("length", LENGTHS.values(), ids=LENGTHS.keys())
def test_chunked_matches_reference_all_options(length: int, g: int) -> None:
    args = make_inputs(2, length, 4, 3, g, 5, **OPTION_SETS["all"])
    assert_same(run(ssd_chunked, args, Q), run(ssd_ref, args, Q), F64)


@pytest.mark.parametrize("options", OPTION_SETS.keys())
def test_chunked_matches_reference_each_option(options: str) -> None:
    args = make_inputs(2, 2 * Q + 3, 4, 3, 2, 5, seed=2, **OPTION_SETS[options])
    assert_same(run(ssd_chunked, args, Q), run(ssd_ref, args, Q), F64)


@pytest.mark.parametrize("block_tokens", [1, 2 * Q, 3 * Q], ids=lambda t: f"block{t}")
def test_chunked_state_crosses_blocks(block_tokens: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # The sequence is processed in blocks of whole chunks; the state must carry across block boundaries.
    monkeypatch.setattr(chunked_mod, "BLOCK_TOKENS", block_tokens)
    args = make_inputs(1, 7 * Q + 5, 4, 3, 2, 5, seed=3, **OPTION_SETS["all"])
    assert_same(run(ssd_chunked, args, Q), run(ssd_ref, args, Q), F64)


def test_chunked_float32_close_to_float64_reference() -> None:
    args = make_inputs(2, 70, 4, 8, 2, 16, seed=4, **OPTION_SETS["all"])
    got = run(ssd_chunked, as_dtype(args, torch.float32), 16)
    y, final, grads = run(ssd_ref, args, 16)
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.float32
    assert_same(got, (y.float(), final, grads), F32)


def test_chunked_bfloat16_runs_and_stays_close() -> None:
    args = make_inputs(1, 40, 4, 8, 1, 16, seed=5, D="h", z=True)
    y16 = ssd_chunked(**{k: v for k, v in as_dtype(args, torch.bfloat16).items()}, chunk_size=16)
    y = ssd_ref(**args, chunk_size=16)
    assert y16.dtype == torch.bfloat16
    assert ((y16.double() - y).norm() / y.norm()).item() < 2e-2


def test_chunk_size_invariance() -> None:
    args = make_inputs(2, 37, 4, 3, 2, 5, seed=6, **OPTION_SETS["all"])
    results = {q: run(ssd_chunked, args, q) for q in (4, 8, 16)}
    for q in (8, 16):
        assert_same(results[q], results[4], F64)


def test_ssd_equals_mamba1_selective_scan_with_per_head_A() -> None:
    # SSD is the Mamba-1 scan with A = A_h·1 shared by the p channels of head h (docs/kernels.md §3).
    b, length, h, p, g, n = 2, 13, 4, 3, 2, 5
    args = make_inputs(b, length, h, p, g, n, seed=7, D="h", z=True, dt_bias=True, dt_softplus=True)
    y, final = ssd_chunked(**args, chunk_size=4, return_final_states=True)
    d = h * p
    u = args["x"].reshape(b, length, d).transpose(1, 2)
    delta = args["dt"].repeat_interleave(p, dim=2).transpose(1, 2)
    A = args["A"].repeat_interleave(p)[:, None].expand(d, n)
    B, C = (t.permute(0, 2, 3, 1) for t in (args["B"], args["C"]))  # (b, g, n, l)
    y_scan, last = kernels.selective_scan(u, delta, A, B, C, D=args["D"].repeat_interleave(p),
                                          z=args["z"].reshape(b, length, d).transpose(1, 2),
                                          delta_bias=args["dt_bias"].repeat_interleave(p), delta_softplus=True,
                                          return_last_state=True, backend="reference")
    torch.testing.assert_close(y, y_scan.transpose(1, 2).reshape(b, length, h, p), **F64)
    torch.testing.assert_close(final, last.reshape(b, h, p, n), **F64)


def test_ssd_equals_masked_attention_dual_form() -> None:
    # Y = (L ∘ C Bᵀ)(dt·X) with L_ij = exp(Σ_{k=j+1..i} dt_k A): the quadratic "attention" form, per head.
    args = make_inputs(1, 11, 2, 3, 1, 4, seed=8)
    y = ssd_chunked(**args, chunk_size=4)
    x, dt, B, C = (args[k][0] for k in ("x", "dt", "B", "C"))
    A = args["A"]
    for head in range(2):
        cs = torch.cumsum(dt[:, head] * A[head], 0)
        mask = torch.tril(torch.exp(cs[:, None] - cs[None, :]))
        scores = mask * (C[:, 0] @ B[:, 0].T)
        torch.testing.assert_close(y[0, :, head], scores @ (dt[:, head, None] * x[:, head]), **F64)


def test_stable_segsum_keeps_precision_when_the_cumsum_is_large() -> None:
    # A chunk whose total decay is large: cumsum(a)_i - cumsum(a)_j loses the short segments to cancellation
    # (relative error ~ |cumsum| · eps / |segment|); the masked cumsum sums each segment on its own.
    a = torch.full((64,), -40.0) + torch.linspace(0, 1e-3, 64)
    exact = stable_segsum(a.double())
    strict = torch.tril(torch.ones(64, 64, dtype=torch.bool), diagonal=-1)

    def rel_err(s: torch.Tensor) -> float:
        return ((s.double() - exact).abs() / exact.abs())[strict].max().item()

    got = stable_segsum(a)
    cs = a.cumsum(0)
    assert rel_err(got) < 1e-6
    assert rel_err(cs[:, None] - cs[None, :]) > 10 * rel_err(got)
    assert torch.equal(got[~strict], torch.zeros(64 * 65 // 2))  # diagonal and above: exp(0), masked by callers


def test_inputs_are_validated() -> None:
    args = make_inputs(1, 5, 4, 3, 2, 5)
    three_groups = {k: args[k][:, :, :1].expand(1, 5, 3, 5) for k in ("B", "C")}
    with pytest.raises(ValueError, match="divisible by groups"):
        ssd_chunked(**{**args, **three_groups}, chunk_size=4)
    with pytest.raises(ValueError, match="D must have shape"):
        ssd_ref(**{**args, "D": torch.ones(3)}, chunk_size=4)
    with pytest.raises(ValueError, match="chunk_size"):
        ssd_chunked(**args, chunk_size=0)


def test_backend_listing_and_auto_dispatch_on_cpu(require_compiled) -> None:
    require_compiled(compiled_ssd_mod.probe)  # auto must pick the compiled SSD, never silently the chunked one
    status = {s.name: s for s in kernels.backends("ssd", "cpu")}
    assert set(status) == {"reference", "chunked", "compiled", "minimal", "triton", "mamba_ssm", "fla"}
    assert status["chunked"].available and status["reference"].available and status["minimal"].available
    for name in ("triton", "mamba_ssm", "fla"):  # CUDA-only: unavailable on CPU, with a reason
        assert not status[name].available and status[name].reason
    fastest = "compiled"
    assert kernels.dispatch("ssd", "auto", "cpu")[0] == fastest
    args = make_inputs(1, 9, 4, 3, 2, 5, D="h")
    y = kernels.ssd(**args, chunk_size=4)
    assert kernels.last_backend("ssd") == fastest
    torch.testing.assert_close(y, kernels.ssd(**args, chunk_size=4, backend="reference"), **F64)
    with pytest.raises(BackendUnavailable, match="mamba_ssm"):
        kernels.ssd(**args, chunk_size=4, backend="mamba_ssm")


# ---- the paper's minimal SSD (the peer backend) -------------------------------------------------------------------
@pytest.mark.parametrize("length", [1, 2 * Q + 3, 3 * Q], ids=["L1", "2Q+3", "3Q"])
def test_minimal_matches_reference(length: int) -> None:
    args = make_inputs(2, length, 4, 3, 2, 5, seed=14, **OPTION_SETS["all"])
    assert_same(run(ssd_minimal, args, Q), run(ssd_ref, args, Q), F64)


# ---- compiled C++ recurrence (CPU) ----------------------------------------------------------------------------------
@pytest.fixture
def compiled_ssd(require_compiled):
    require_compiled(compiled_ssd_mod.probe)  # a failed build fails; skips only without a toolchain
    return compiled_ssd_mod.ssd_compiled


# 70 steps cross the kernel's 32-step time blocks; p and n of 3/5 (padded to one tile), 20 (two state-row tiles
# after padding) and 64 (whole tiles, no padding).
COMPILED_SHAPES = {"L1-p3-n5": (1, 3, 5), "L7": (7, 3, 5), "Q+1": (Q + 1, 3, 5), "L70-p20-n20": (70, 20, 20),
                   "L33-p64-n64": (33, 64, 64)}


@pytest.mark.parametrize("g", [1, 2], ids=lambda g: f"g{g}")
@pytest.mark.parametrize("shape", COMPILED_SHAPES.values(), ids=COMPILED_SHAPES.keys())
def test_compiled_matches_reference(compiled_ssd, shape: tuple, g: int) -> None:
    length, p, n = shape
    for options in ("plain", "all", "Dhp-z"):
        args = make_inputs(2, length, 4, p, g, n, seed=15, **OPTION_SETS[options])
        assert_same(run(compiled_ssd, args, Q, with_grad=False), run(ssd_ref, args, Q, with_grad=False), F64)


@pytest.mark.parametrize("g", [1, 2], ids=lambda g: f"g{g}")
@pytest.mark.parametrize("shape", COMPILED_SHAPES.values(), ids=COMPILED_SHAPES.keys())
def test_compiled_gradients(compiled_ssd, shape: tuple, g: int) -> None:
    # With gradients the C++ forward also stores the chunk-entry states (padded p / n sliced off) and the GEMM
    # backward (backward.py) runs from them.
    length, p, n = shape
    for options in ("all", "Dhp-z"):
        args = make_inputs(2, length, 4, p, g, n, seed=16, **OPTION_SETS[options])
        assert_same(run(compiled_ssd, args, Q), run(ssd_ref, args, Q), F64)


@pytest.mark.parametrize("case", [("L7", 2, "all"), ("L70-p20-n20", 1, "Dhp-z"), ("L1-p3-n5", 2, "init")],
                         ids=lambda c: "-".join(map(str, c)))
def test_compiled_op_is_one_graph_matching_reference_in_float64(compiled_ssd, case: tuple) -> None:
    """Under torch.compile the C++ SSD is the op ssmbench::ssd, its backward backward.py's GEMM backward as the op
    ssmbench::ssd_backward (no graph break, no torch.compiler.disable): outputs, final states and every gradient
    equal the reference, with gradients (chunk states saved, z gated outside), with y alone differentiated, and
    without gradients (z fused into the kernel, no chunk states)."""
    shape, g, options = case
    length, p, n = COMPILED_SHAPES[shape]
    args = make_inputs(2, length, 4, p, g, n, seed=22, **OPTION_SETS[options])
    torch._dynamo.reset()
    ssd = torch.compile(compiled_ssd, backend="aot_eager", fullgraph=True)
    assert_same(run(ssd, args, Q), run(ssd_ref, args, Q), F64)
    assert_same(run(ssd, args, Q, with_grad=False), run(ssd_ref, args, Q, with_grad=False), F64)
    grads = {}
    for name, f in (("got", ssd), ("want", ssd_ref)):  # y alone: no gradient reaches the final state
        x = args["x"].clone().requires_grad_()
        y = f(x, *(args[k] for k in ("dt", "A", "B", "C")), Q, D=args["D"], z=args["z"], dt_bias=args["dt_bias"],
              dt_softplus=args["dt_softplus"], initial_states=args["initial_states"])
        (grads[name],) = torch.autograd.grad((y * y.detach().sin()).sum(), x)
    torch.testing.assert_close(grads["got"], grads["want"], **F64)
    core = [None if args[k] is None else args[k].clone().requires_grad_() for k in ("x", "dt", "A", "B", "C", "D")]
    S0 = None if args["initial_states"] is None else args["initial_states"].clone().requires_grad_()
    torch.library.opcheck(torch.ops.ssmbench.ssd.default, (*core, None, S0, Q))
    torch.library.opcheck(torch.ops.ssmbench.ssd.default,
                          (*(None if t is None else t.detach() for t in core), args["z"], args["initial_states"], 0))


# ---- the hand-written backward (backward.py), behind both chunked and compiled under autograd ---------------------
def trainable(require_compiled, backend: str):
    """The backend's SSD function; the chunked one is tested even where nothing can be compiled."""
    if backend == "compiled":
        require_compiled(compiled_ssd_mod.probe)
        return compiled_ssd_mod.ssd_compiled
    return ssd_chunked


@pytest.mark.parametrize("backend", ["chunked", "compiled"])
def test_chunk_entry_states_are_the_reference_states(require_compiled, backend: str) -> None:
    # s_prev[k] is the state after k·Q steps: the reference's final state on the first k·Q tokens.
    args = make_inputs(2, 4 * Q + 3, 4, 3, 2, 5, seed=19, **OPTION_SETS["init"])
    trainable(require_compiled, backend)
    fwd = {"chunked": chunked_mod.forward_with_states, "compiled": compiled_ssd_mod.forward_with_states}[backend]
    x, dt, A, B, C, S0 = (args[k] for k in ("x", "dt", "A", "B", "C", "initial_states"))
    y, final, s_prev = fwd(x, dt, A, B, C, None, S0, Q)
    assert s_prev.shape == (2, 5, 4, 5, 3)  # (b, ceil(l / Q), h, n, p)
    for k in range(5):
        _, want = ssd_ref(x[:, :k * Q], dt[:, :k * Q], A, B[:, :k * Q], C[:, :k * Q], Q, initial_states=S0,
                          return_final_states=True)
        torch.testing.assert_close(s_prev[:, k], want.transpose(-1, -2), **F64)
    y_ref, final_ref = ssd_ref(x, dt, A, B, C, Q, initial_states=S0, return_final_states=True)
    torch.testing.assert_close(y, y_ref, **F64)
    torch.testing.assert_close(final, final_ref, **F64)


@pytest.mark.parametrize("block_tokens", [1, Q, 3 * Q], ids=lambda t: f"block{t}")
@pytest.mark.parametrize("backend", ["chunked", "compiled"])
def test_backward_state_gradient_crosses_blocks(require_compiled, backend: str, block_tokens: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # The backward walks blocks of whole chunks from the last, carrying dS; 1 token rounds up to one chunk.
    monkeypatch.setattr(backward_mod, "BWD_BLOCK_TOKENS", block_tokens)
    fn = trainable(require_compiled, backend)
    args = make_inputs(1, 7 * Q + 5, 4, 3, 2, 5, seed=20, **OPTION_SETS["all"])
    assert_same(run(fn, args, Q), run(ssd_ref, args, Q), F64)


@pytest.mark.parametrize("backend", ["chunked", "compiled"])
def test_backward_of_y_alone_and_of_some_inputs(require_compiled, backend: str) -> None:
    # No gradient reaches the final state (dfinal is None), and only x and B require one.
    fn = trainable(require_compiled, backend)
    args = make_inputs(2, 3 * Q + 1, 4, 3, 1, 5, seed=21, D="h")
    grads = {}
    for name, f in (("got", fn), ("want", ssd_ref)):
        x, B = args["x"].clone().requires_grad_(), args["B"].clone().requires_grad_()
        y = f(x, args["dt"], args["A"], B, args["C"], Q, D=args["D"])
        grads[name] = torch.autograd.grad((y * y.detach().sin()).sum(), (x, B))
    for got, want in zip(grads["got"], grads["want"], strict=True):
        torch.testing.assert_close(got, want, **F64)


@pytest.mark.parametrize("backend", ["chunked", "compiled"])
def test_backward_strong_decay_and_float32(require_compiled, backend: str) -> None:
    # Decays of e^-60 per step zero whole chunks' carries; float32 gradients stay within float32 tolerances.
    fn = trainable(require_compiled, backend)
    args = make_inputs(1, 5 * Q + 2, 4, 8, 2, 16, seed=22, **OPTION_SETS["all"])
    args["A"] = torch.tensor([-20.0, -60.0, -1e-3, -1.0], dtype=torch.float64)
    want = run(ssd_ref, args, Q)
    assert_same(run(fn, args, Q), want, F64)
    got = run(fn, as_dtype(args, torch.float32), Q)
    assert_same(got, (want[0].float(), want[1], {k: v.float() for k, v in want[2].items()}), F32)


def test_compiled_rescales_strong_decay(compiled_ssd) -> None:
    # The kernel keeps S / (a_1 ... a_t) and rescales when that product leaves [1e-150, 1e150] (float64): decays
    # of e^-20..e^-60 per step trigger it every few steps, and a step of e^-1000 underflows the decay to 0.
    args = make_inputs(1, 70, 4, 3, 2, 5, seed=17, **OPTION_SETS["init"])
    args["A"] = torch.tensor([-20.0, -60.0, -1e-3, 0.0], dtype=torch.float64)
    args["dt"] = torch.ones_like(args["dt"])
    args["dt"][0, 40, 2] = 1e6
    assert_same(run(compiled_ssd, args, Q, with_grad=False), run(ssd_ref, args, Q, with_grad=False), F64)
    args32 = as_dtype(args, torch.float32)  # float32 rescales at 1e-18
    y, final, _ = run(ssd_ref, args, Q, with_grad=False)
    assert_same(run(compiled_ssd, args32, Q, with_grad=False), (y.float(), final, {}), F32)


def test_compiled_float32_and_bf16(compiled_ssd) -> None:
    args = make_inputs(1, 100, 4, 64, 1, 64, seed=18, **OPTION_SETS["all"])
    y, final, _ = run(ssd_ref, args, Q, with_grad=False)
    got = run(compiled_ssd, as_dtype(args, torch.float32), Q, with_grad=False)
    assert got[0].dtype == torch.float32
    assert_same(got, (y.float(), final, {}), F32)
    y16 = compiled_ssd(**as_dtype(args, torch.bfloat16), chunk_size=Q)
    assert y16.dtype == torch.bfloat16
    assert ((y16.double() - y).norm() / y.norm()).item() < 2e-2


def fake_chunk_simple_gla(q, k, v, g=None, scale=None, initial_state=None, output_final_state=False):
    """fla's gated linear attention in fla's conventions: S_t = exp(g_t) S_{t-1} + k_t v_tᵀ (n × p), o = scale·qᵀS."""
    b, length, h, n = q.shape
    s = initial_state.clone() if initial_state is not None else q.new_zeros(b, h, n, v.shape[-1])
    outs = []
    for t in range(length):
        s = torch.exp(g[:, t])[..., None, None] * s + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(scale * (q[:, t, :, :, None] * s).sum(-2))
    return torch.stack(outs, dim=1), (s if output_final_state else None)


def test_fla_adapter_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    # q = C, k = B per head, v = x·dt, g = dt·A, scale = 1, state (b, h, n, p) <-> ours (b, h, p, n); D, z after.
    fake = ModuleType("fla.ops.simple_gla")
    fake.chunk_simple_gla = fake_chunk_simple_gla
    for name in ("fla", "fla.ops"):
        monkeypatch.setitem(sys.modules, name, ModuleType(name))
    monkeypatch.setitem(sys.modules, "fla.ops.simple_gla", fake)
    from ssmbench.kernels.mamba2.upstream import ssd_fla

    args = make_inputs(2, 9, 4, 3, 2, 5, seed=13, **OPTION_SETS["all"])
    y, final = ssd_fla(**args, chunk_size=4, return_final_states=True)
    y_ref, final_ref = ssd_ref(**args, chunk_size=4, return_final_states=True)
    # The adapter hands fla its log-decay and state in float32 (what fla's kernels take), hence float32 tolerances.
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final.double(), final_ref, rtol=1e-5, atol=1e-5)


# ---- Triton: interpreter on CPU, compiled on CUDA -------------------------------------------------------------
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")


def triton_module() -> ModuleType:
    pytest.importorskip("triton")
    mod = importlib.import_module("ssmbench.kernels.mamba2.triton")
    if DEVICE == "cpu" and type(mod._chunk_scan_kernel).__name__ != "InterpretedFunction":
        mod = importlib.reload(mod)  # imported earlier without the interpreter
    return mod


def on_device(args: dict) -> dict:
    return {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in args.items()}


def to_cpu(result):
    y, final, grads = result
    return y.cpu(), final.cpu(), {k: v.cpu() for k, v in grads.items()}


TRITON_CASES = {  # (length, chunk, g, options); kept tiny: the interpreter runs every program in Python
    "L1-g1-all": (1, 16, 1, "all"),
    "Q+3-g2-all": (19, 16, 2, "all"),
    "3chunks-g2-Dhp-z": (40, 16, 2, "Dhp-z"),
    "2chunks-g1-plain": (32, 16, 1, "plain"),
}


@pytest.mark.parametrize("case", TRITON_CASES.values(), ids=TRITON_CASES.keys())
def test_triton_matches_reference(case: tuple) -> None:
    mod = triton_module()
    length, chunk, g, options = case
    args = make_inputs(1, length, 4, 3, g, 5, seed=9, **OPTION_SETS[options])
    got = run(mod.ssd_triton, on_device(args), chunk, with_grad=False)
    want = run(ssd_ref, args, chunk, with_grad=False)
    assert_same(to_cpu(got), want, F64)


def test_triton_gradients_by_recomputation() -> None:
    mod = triton_module()
    args = make_inputs(1, 20, 2, 3, 1, 5, seed=10, **OPTION_SETS["all"])
    assert_same(to_cpu(run(mod.ssd_triton, on_device(args), 16)), run(ssd_ref, args, 16), F64)


def test_triton_float32() -> None:
    mod = triton_module()
    args = make_inputs(1, 35, 4, 8, 2, 16, seed=11, **OPTION_SETS["all"])
    got = run(mod.ssd_triton, on_device(as_dtype(args, torch.float32)), 16, with_grad=False)
    y, final, _ = run(ssd_ref, args, 16, with_grad=False)
    assert_same(to_cpu(got), (y.float(), final, {}), F32)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["triton", "mamba_ssm", "fla"])
def test_gpu_backends_match_reference(backend: str) -> None:
    status = {s.name: s for s in kernels.backends("ssd", "cuda")}
    if not status[backend].available:
        pytest.skip(f"{backend}: {status[backend].reason}")
    args = make_inputs(2, 300, 8, 64, 2, 64, dtype=torch.float32, seed=12, **OPTION_SETS["all"])
    y, final = kernels.ssd(**on_device(args), chunk_size=64, return_final_states=True, backend=backend)
    y_ref, final_ref = ssd_ref(**as_dtype(args, torch.float64), chunk_size=64, return_final_states=True)
    torch.testing.assert_close(y.double().cpu(), y_ref, rtol=1e-2, atol=3e-3)
    torch.testing.assert_close(final.double().cpu(), final_ref, rtol=1e-2, atol=3e-3)
