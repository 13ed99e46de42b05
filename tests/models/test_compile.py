"""``--compile`` paths: compiled == eager in float64 (decode steps, forward, training step), graph breaks counted.

The fast tests compile with the "aot_eager" backend: the same dynamo tracing, functionalisation of the in-place
cache updates and graph breaks as inductor, without code generation (seconds instead of minutes on 2 cores).
Inductor's decode path (ahead of time, on CPU) is tested in test_aot.py.
"""

from __future__ import annotations

import pytest
import torch

from ssmbench.models import compile as compile_mod
from ssmbench.models import make_config
from ssmbench.models.compile import CompileStats, compile_fn, fresh_compile_state
from ssmbench.models.inference import prefill, start_decoding
from ssmbench.registry import MODELS

VOCAB = 13


@pytest.fixture
def aot_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compile_mod, "BACKEND", "aot_eager")
    torch._dynamo.reset()


def build(name: str, d_model: int = 24) -> torch.nn.Module:
    torch.manual_seed(0)
    return make_config(name, d_model=d_model, n_layers=2, vocab_size=VOCAB, options={"d_state": 6}).build().double()


def decode(model: torch.nn.Module, compiled: bool, prompt: torch.Tensor, k: int) -> tuple[list, list]:
    """k greedy tokens after ``prompt``, twice (the second time after rewinding): (tokens, final cache tensors)."""
    cache = model.allocate_inference_cache(prompt.shape[0], prompt.shape[1] + k + 1, torch.float64)
    logits, _ = prefill(model, prompt, cache)
    decoder, snapshot, _ = start_decoding(model, cache, logits.argmax(-1), cuda_graphs=False, compiled=compiled)
    runs = []
    for _ in range(2):
        snapshot.restore(cache)
        decoder.reset(logits.argmax(-1))
        out = []
        for _ in range(k):
            decoder.step()
            out.append(decoder.token.clone())
        runs.append(torch.stack(out, 1))
    assert torch.equal(runs[0], runs[1])  # a rewound compiled decoder replays the same tokens
    # every state tensor but attention's device position, which only the static (compiled) step advances
    states = [t.clone() for c in cache if c is not None for key, t in c.items()
              if isinstance(t, torch.Tensor) and key != "pos_t"]
    return runs[0], states


def assert_compiled_decode_equals_eager(model: torch.nn.Module, prompt: torch.Tensor, k: int, rtol: float) -> None:
    """The same greedy tokens and (to rtol, atol 1e-12) the same final cache, decoded eagerly and compiled."""
    eager_tokens, eager_states = decode(model, False, prompt, k)
    compiled_tokens, compiled_states = decode(model, True, prompt, k)
    assert torch.equal(compiled_tokens, eager_tokens)
    for a, b in zip(compiled_states, eager_states, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("name", MODELS.names())
@torch.inference_mode()
def test_compiled_decode_equals_eager_in_float64(aot_eager, name):
    prompt = torch.randint(0, VOCAB, (3, 5), generator=torch.Generator().manual_seed(1))
    assert_compiled_decode_equals_eager(build(name).eval(), prompt, 7, rtol=1e-12)


def test_graph_breaks_are_counted_with_their_reason(aot_eager):
    def fn(x: torch.Tensor) -> torch.Tensor:
        y = x.sin()
        torch._dynamo.graph_break()
        return y.cos()

    stats = CompileStats()
    compiled = compile_fn(fn, "cpu")
    with stats.watch():
        out = compiled(torch.ones(3))
    torch.testing.assert_close(out, torch.ones(3).sin().cos())
    assert stats.graph_breaks == 1 and stats.graphs == 2
    assert len(stats.reasons) == 1 and stats.info()["graph_breaks"] == 1

    whole = CompileStats()
    with whole.watch():
        compile_fn(lambda x: x.sin().cos(), "cpu")(torch.ones(3))
    assert whole.graph_breaks == 0 and whole.graphs == 1 and whole.reasons == []


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
def test_compiled_speed_case_labels_the_backend_and_counts_graphs(aot_eager, tiny_case, mode):
    from ssmbench.bench.speed import run_training_mode_case

    result = run_training_mode_case(tiny_case("transformer", mode=mode, compile="compiled"))
    assert result.status == "ok" and result.info["backend"].endswith("+torch.compile")
    values = {m.metric: m.value for m in result.metrics}
    assert values["compiled_graphs"] >= 1 and values["graph_breaks"] == 0 and values["first_call"] > 0
    eager = run_training_mode_case(tiny_case("transformer", mode=mode))
    assert "graph_breaks" not in {m.metric for m in eager.metrics} and "+" not in eager.info["backend"]


def float64_loss(model: torch.nn.Module, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A loss that stays in float64 (lm_loss takes the cross-entropy in float32, where inductor's fusions round
    differently from eager)."""
    return model(tokens).log_softmax(-1).gather(-1, targets[..., None]).mean()


@torch.no_grad()
def assert_compiled_loss_gradients_equal_eager(name: str, lm_loss=None) -> None:
    """The loss and every parameter gradient of a training step, eager and through compile_fn, in float64."""
    if lm_loss is None:
        from ssmbench.bench.speed import lm_loss

    model = build(name).train()
    x = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(4))
    grads = []
    for fn in (lm_loss, compile_fn(lm_loss, "cpu")):
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = fn(model, x, y)
            loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-12, atol=0)
    for a, b in zip(grads[1][1], grads[0][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["mamba", "mamba2", "hybrid", "s4", "s4-dplr"])
def test_compiled_forward_and_loss_gradients_equal_eager_in_float64(aot_eager, name):
    assert_compiled_loss_gradients_equal_eager(name)


@pytest.mark.parametrize("name", ["mamba", "mamba2", "hybrid"])
def test_compiled_ssm_forward_and_training_step_are_one_graph(aot_eager, name):
    """The C++ scan and SSD enter the graph as ops (ssmbench::selective_scan, ssmbench::ssd and their backward ops),
    not behind torch.compiler.disable: a compiled forward and a compiled training step are each one graph."""
    from ssmbench.bench.speed import lm_loss

    model = build(name).train()
    x = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))
    for fn, grad in ((lambda m, x, y: m(x), False), (lm_loss, True)):
        torch._dynamo.reset()
        stats = CompileStats()
        with stats.watch(), torch.set_grad_enabled(grad):
            out = compile_fn(fn, "cpu")(model, x, x)
            if grad:
                out.backward()
        assert (stats.graphs, stats.graph_breaks) == (1, 0), stats.reasons


@pytest.mark.slow
@pytest.mark.parametrize("name", ["s4", "s4-dplr", "mamba", "mamba2", "hybrid"])
def test_inductor_forward_and_loss_gradients_equal_eager_in_float64(name):
    """Inductor around the C++ kernels' ops (ssmbench::fft_conv, ssmbench::s4_cauchy_woodbury, ssmbench::selective_scan,
    ssmbench::ssd and their backward ops): the strides inductor hands them and the complex tensors it passes through
    change nothing."""
    torch._dynamo.reset()
    assert_compiled_loss_gradients_equal_eager(name, float64_loss)


def test_every_compiled_case_compiles_past_dynamo_recompile_limit(aot_eager):
    """A worker compiles case after case; without fresh_compile_state before each (engine/worker.configure calls it),
    dynamo's per-code-object limit (8) would make the later ones run eagerly with no graph compiled."""
    def forward(model, x):
        return model(x)

    x = torch.randn(2, 3)
    for i in range(12):
        model = torch.nn.Linear(3, 3)  # a new object each case: a guard failure for the shared code object
        fresh_compile_state()
        stats = CompileStats()
        fn = compile_fn(forward, "cpu")
        with stats.watch():
            fn(model, x)
        assert stats.graphs == 1, f"case {i} compiled {stats.graphs} graphs"


def test_rope_table_built_in_a_compiled_inference_forward_serves_training(aot_eager):
    """A compiled forward under inference_mode that meets a cold RoPE cache (torch.compile itself: compile_fn would
    fill it with its eager first run) leaves nothing a later training step cannot save for backward."""
    torch.manual_seed(0)
    model = make_config("transformer", d_model=32, n_layers=1, vocab_size=VOCAB).build()
    tokens = torch.randint(0, VOCAB, (2, 9))
    with torch.inference_mode():
        torch.compile(model, backend="aot_eager", dynamic=False)(tokens)
    model(tokens).sum().backward()
    assert model.head.weight.grad is not None
