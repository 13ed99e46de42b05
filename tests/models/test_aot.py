"""Decode steps compiled ahead of time (AOTInductor, the CPU path of ``--compile`` decode): equal to eager in
float64, one graph, the same buffers updated in place; a step export cannot trace falls back to torch.compile and
says why. These compile real C++ (a few seconds each); every family is covered by the slow test."""

from __future__ import annotations

import pytest
import torch

from ssmbench.models import compile as compile_mod
from ssmbench.models.aot import AOT_PATH, AheadOfTimeStep
from ssmbench.models.compile import CompileStats, compile_step
from ssmbench.models.inference import start_decoding
from ssmbench.registry import MODELS
from tests.models.test_compile import VOCAB, assert_compiled_decode_equals_eager, build


@pytest.fixture(autouse=True)
def inductor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compile_mod, "BACKEND", "inductor")  # whatever another test module left set
    torch._dynamo.reset()


def prompt() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 4), generator=torch.Generator().manual_seed(5))


@torch.inference_mode()
def test_ahead_of_time_mamba_decode_equals_eager_in_float64():
    assert_compiled_decode_equals_eager(build("mamba", d_model=20).eval(), prompt(), 5, rtol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS.names())
@torch.inference_mode()
def test_ahead_of_time_decode_equals_eager_in_float64_for_every_family(name):
    assert_compiled_decode_equals_eager(build(name, d_model=20).eval(), prompt(), 5, rtol=1e-10)


@torch.inference_mode()
def test_cpu_decoder_compiles_one_graph_ahead_of_time():
    model = build("transformer", d_model=16).eval()
    cache = model.allocate_inference_cache(1, 8, torch.float64)
    first = torch.zeros(1, dtype=torch.long)
    decoder, _, _ = start_decoding(model, cache, first, cuda_graphs=False, compiled=True)
    stats = decoder.compile_stats
    assert stats.path == AOT_PATH and stats.graphs == 1 and stats.graph_breaks == 0 and not stats.fallback
    assert stats.info()["compile_path"] == AOT_PATH and decoder.first_step_s > 0


def _data_dependent_step(x: torch.Tensor, out: torch.Tensor) -> None:
    if x.sum() > 0:  # a host branch on a value: export traces with fake tensors and cannot take it
        out.copy_(x * 2)
    else:
        out.copy_(-x)


def test_step_export_cannot_trace_falls_back_to_torch_compile_and_says_why():
    x, out = torch.ones(3), torch.zeros(3)
    stats = CompileStats()
    step = compile_step(_data_dependent_step, "cpu", False, stats)
    with stats.watch():
        step(x, out)
    torch.testing.assert_close(out, x * 2)
    assert stats.path != AOT_PATH and stats.fallback and "aot_fallback" in stats.info()
    x.fill_(-1.0)
    step(x, out)  # the fallback keeps serving later calls
    torch.testing.assert_close(out, torch.ones(3))


def test_ahead_of_time_step_refuses_other_argument_objects():
    def step(x: torch.Tensor) -> None:
        x.mul_(2)

    x = torch.ones(4)
    aot = AheadOfTimeStep(step, {})
    aot(x)  # an eager step, then the compiled one
    torch.testing.assert_close(x, torch.full((4,), 4.0))
    aot(x)
    torch.testing.assert_close(x, torch.full((4,), 8.0))
    with pytest.raises(ValueError, match="argument objects"):
        aot(torch.ones(4))
