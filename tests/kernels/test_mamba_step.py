"""The Mamba-1 decode step: the C++ step equals the PyTorch step (float64 to rounding, float32 and bfloat16 to their
precision) on odd shapes, updates both states in place, rejects bad inputs, and stays one graph under torch.compile.

The PyTorch step itself is checked against the parallel forward in tests/models/test_decode_all.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ssmbench import kernels
from ssmbench.kernels.mamba1 import step as step_mod
from ssmbench.kernels.mamba1.step import MambaStepWeights, mamba_step_compiled, mamba_step_torch


@pytest.fixture
def compiled_step(require_compiled):
    require_compiled(step_mod.probe)
    return mamba_step_compiled


def make(dtype: torch.dtype, b: int = 3, dm: int = 24, di: int = 40, k: int = 3, r: int = 3, n: int = 5,
         seed: int = 0) -> tuple[MambaStepWeights, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.3) -> torch.Tensor:
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    w = MambaStepWeights(rand(2 * di, dm), rand(di, k), rand(di), rand(r + 2 * n, di), rand(di, r), rand(di),
                         rand(di, n, scale=1.0), rand(di), rand(dm, di))
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    return w, rand(b, di, k), torch.randn(b, di, n, generator=g, dtype=torch.float64).to(state_dtype)


def run_steps(fn, w: MambaStepWeights, conv: torch.Tensor, ssm: torch.Tensor, dtype: torch.dtype, steps: int = 5):
    g = torch.Generator().manual_seed(1)
    outs = []
    for _ in range(steps):
        hidden = torch.randn(conv.shape[0], w.w_in.shape[1], generator=g, dtype=torch.float64).to(dtype)
        outs.append(fn(hidden, conv, ssm, w))
    return torch.stack(outs), conv, ssm


# (dtype, shape overrides, tolerance relative to the output's scale): n = 16 takes the AVX-512 state loop, odd n the
# generic one; K not a multiple of the vector width takes the masked tails of the matvecs. bfloat16 rounds where the
# PyTorch step does (conv products included), so it agrees to about one bfloat16 ulp.
CASES = [
    (torch.float64, {}, 1e-12),
    (torch.float64, {"n": 16, "di": 37, "r": 5}, 1e-12),
    (torch.float32, {}, 1e-5),
    (torch.float32, {"n": 16, "di": 45, "dm": 33}, 1e-5),
    (torch.bfloat16, {}, 1e-2),
    (torch.bfloat16, {"n": 16, "di": 50, "dm": 70, "b": 1}, 1e-2),
    (torch.bfloat16, {"n": 17, "di": 32, "dm": 32, "k": 4}, 1e-2),
]


@pytest.mark.parametrize(("dtype", "shape", "tol"), CASES)
def test_compiled_step_matches_torch_step(dtype, shape, tol, compiled_step) -> None:
    w, conv, ssm = make(dtype, **shape)
    want, conv_t, ssm_t = run_steps(mamba_step_torch, w, conv.clone(), ssm.clone(), dtype)
    got, conv_c, ssm_c = run_steps(compiled_step, w, conv.clone(), ssm.clone(), dtype)
    for mine, theirs in ((got, want), (ssm_c, ssm_t), (conv_c, conv_t)):
        assert (mine.double() - theirs.double()).abs().max().item() <= tol * theirs.double().abs().max().item()


def test_compiled_step_updates_states_in_place(compiled_step) -> None:
    w, conv, ssm = make(torch.float64)
    conv_ptr, ssm_ptr, before = conv.data_ptr(), ssm.data_ptr(), ssm.clone()
    compiled_step(torch.ones(3, 24, dtype=torch.float64), conv, ssm, w)
    assert conv.data_ptr() == conv_ptr and ssm.data_ptr() == ssm_ptr
    assert not torch.equal(ssm, before)
    x = torch.nn.functional.linear(torch.ones(3, 24, dtype=torch.float64), w.w_in)[:, :40]
    torch.testing.assert_close(conv[..., -1], x, rtol=0, atol=1e-12)  # the newest conv input is in_proj's x


@pytest.mark.parametrize(("change", "message"), [
    (lambda h, c, s, w: (h, c.float(), s, w), "share one dtype"),
    (lambda h, c, s, w: (h, c, s.float(), w), "ssm_state must be torch.float64"),
    (lambda h, c, s, w: (h, c[:, :, :2].contiguous(), s, w), "conv_state must be"),
    (lambda h, c, s, w: (h, c.transpose(0, 1).contiguous().transpose(0, 1), s, w), "contiguous"),
    (lambda h, c, s, w: (h.half(), c.half(), s.float(), w), "float64, float32 or bfloat16"),
    (lambda h, c, s, w: (h, c, s, dataclasses.replace(w, D=w.D[:1])), "D must be"),  # read past its end before
    (lambda h, c, s, w: (h, c, s, dataclasses.replace(w, A_log=w.A_log[:3])), "A_log must be"),
])
def test_compiled_step_rejects_bad_inputs(change, message, compiled_step) -> None:
    w, conv, ssm = make(torch.float64)
    args = change(torch.ones(3, 24, dtype=torch.float64), conv, ssm, w)
    with pytest.raises(ValueError, match=message):
        compiled_step(*args)


def test_auto_step_is_compiled_on_cpu(compiled_step) -> None:
    w, conv, ssm = make(torch.float32)
    kernels.mamba_step(torch.ones(3, 24), conv, ssm, w)
    assert kernels.last_backend("mamba_step") == "compiled"
    kernels.mamba_step(torch.ones(3, 24), conv, ssm, w, backend="torch")
    assert kernels.last_backend("mamba_step") == "torch"


def test_compiled_step_is_one_graph_under_torch_compile(compiled_step) -> None:
    """The custom op keeps the step in the graph (no break) with its in-place state updates applied."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    w, conv, ssm = make(torch.float64)
    hidden = torch.randn(3, 24, dtype=torch.float64)
    eager_conv, eager_ssm = conv.clone(), ssm.clone()
    want = compiled_step(hidden, eager_conv, eager_ssm, w)
    counter = CompileCounter()
    fn = torch.compile(lambda h, c, s: compiled_step(h, c, s, w) * 2, backend=counter, fullgraph=True)
    got = fn(hidden, conv, ssm)
    assert counter.frame_count == 1
    torch.testing.assert_close(got, want * 2, rtol=0, atol=1e-12)
    torch.testing.assert_close(ssm, eager_ssm, rtol=0, atol=1e-12)
    assert torch.equal(conv, eager_conv)


def test_cached_arguments_follow_the_weights(compiled_step) -> None:
    """The checked arguments are cached per weight set: new weights (another address or dtype) are checked again,
    and an in-place update of the same weights is seen by the next step."""
    w, conv, ssm = make(torch.float64)
    hidden = torch.randn(3, 24, dtype=torch.float64)
    first = compiled_step(hidden, conv.clone(), ssm.clone(), w)
    with torch.no_grad():
        w.w_out.mul_(2)  # same tensors, new values
    torch.testing.assert_close(compiled_step(hidden, conv.clone(), ssm.clone(), w), 2 * first, rtol=0, atol=1e-12)
    mixed = dataclasses.replace(w, w_out=w.w_out.float())  # one weight in another dtype
    with pytest.raises(ValueError, match="share one dtype"):
        compiled_step(hidden, conv.clone(), ssm.clone(), mixed)


def test_strided_hidden_under_torch_compile(compiled_step) -> None:
    """The op's fake output is contiguous like its real one, so a strided hidden compiles (inductor checks it)."""
    torch._dynamo.reset()
    w, conv, ssm = make(torch.float64, b=3)
    hidden = torch.randn(24, 3, dtype=torch.float64).t()  # (3, 24), strided
    want = compiled_step(hidden, conv.clone(), ssm.clone(), w)
    fn = torch.compile(lambda h, c, s: compiled_step(h, c, s, w), fullgraph=True)  # inductor asserts the strides
    torch.testing.assert_close(fn(hidden, conv.clone(), ssm.clone()), want, rtol=0, atol=1e-12)
