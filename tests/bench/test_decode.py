"""Decode/prefill benchmark cases (bench/decode.py) and the generation loop (generate.py), on tiny CPU models."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ssmbench import store
from ssmbench.bench.decode import run_decode_case, step_overhead, use_cuda_graphs
from ssmbench.bench.generate import generate
from ssmbench.engine.runner import plan_sweep, run_cases
from ssmbench.engine.worker import execute
from ssmbench.models import make_config
from ssmbench.models.inference import CacheSnapshot, GreedyDecoder, prefill
from ssmbench.spec import ModelSpec, SweepSpec

K = 4


def values(result) -> dict[tuple[str, str], float]:
    return {(m.metric, m.stat): m.value for m in result.metrics}


def case(tiny_case, model: str, mode: str = "decode", seq_len: int = 16, **kw):
    return tiny_case(model, mode=mode, seq_len=seq_len, n_layers=2, samples=2, options=(("decode_tokens", K),), **kw)


@pytest.mark.parametrize("model", ["transformer", "mamba"])
def test_decode_case_reports_latency_ttft_throughput(tiny_case, model):
    c = case(tiny_case, model)
    r = run_decode_case(c)
    assert r.status == "ok", r.error
    v = values(r)
    p50, p90, p99 = (v[("token_latency", q)] for q in ("p50", "p90", "p99"))
    assert 0 < p50 <= p90 <= p99
    assert v[("time", "median")] == p50  # "time" is the per-token latency, so generic tooling reads it
    n = next(m.n_samples for m in r.metrics if m.metric == "token_latency")
    assert n >= 2 * K and n % K == 0  # whole rounds of K tokens
    assert v[("ttft", "value")] > 0 and v[("tokens_per_s", "median")] > 0
    assert v[("cuda_graphs", "value")] == 0.0 and r.info["cuda_graphs"] is False
    assert v[("prefill_step_loop_layers", "value")] == 0 and r.info["prefill_path"] == "native"
    if model == "mamba":  # the CPU default decodes with the fused C++ step, whose matmuls the recorder cannot see
        assert r.info["decode_step"] == "compiled" and "not measured" in r.info["step_overhead"]
        assert ("step_overhead_fraction", "value") not in v
        return
    # the fraction is derived from the two reported minima (its value from a fake clock: tests/bench/test_metrics.py)
    parts = 1.0 - v[("step_matmul_time", "min")] / v[("step_time", "min")]
    assert v[("step_overhead_fraction", "value")] == pytest.approx(min(1.0, max(0.0, parts)))
    assert v[("step_matmul_time", "min")] > 0 and v[("step_time", "min")] > 0


def test_state_bytes_kv_cache_grows_with_context_ssm_state_does_not(tiny_case):
    b, d, layers, L = 2, 32, 2, 16
    kv = values(run_decode_case(case(tiny_case, "transformer", seq_len=L)))
    # 2 (k, v) x layers x B x H x L x head_dim x 4 bytes, + an 8-byte device position per attention layer
    assert kv[("state_bytes", "value")] == 2 * layers * b * d * L * 4 + 8 * layers
    assert kv[("cache_bytes_allocated", "value")] == 2 * layers * b * d * (L + K) * 4 + 8 * layers
    ssm = values(run_decode_case(case(tiny_case, "mamba", seq_len=L)))
    d_inner, n, w = 2 * d, 16, 4
    assert ssm[("state_bytes", "value")] == layers * b * d_inner * (n * 4 + w * 4)
    ssm_long = values(run_decode_case(case(tiny_case, "mamba", seq_len=4 * L)))
    assert ssm_long[("state_bytes", "value")] == ssm[("state_bytes", "value")]


def test_prefill_case_times_like_fwd(tiny_case):
    r = run_decode_case(case(tiny_case, "mamba", mode="prefill"))
    assert r.status == "ok", r.error
    v = values(r)
    assert v[("time", "q25")] <= v[("time", "median")] <= v[("time", "q75")]
    assert v[("tokens_per_s", "median")] == pytest.approx(2 * 16 / v[("time", "median")])
    assert v[("state_bytes", "value")] > 0 and r.info["prefill_path"] == "native"


def test_family_without_prefill_uses_and_records_the_step_loop(tiny_case, monkeypatch):
    from ssmbench.models.mamba import MambaMixer

    monkeypatch.delattr(MambaMixer, "prefill")  # a stateful mixer without the optional prefill()
    r = run_decode_case(case(tiny_case, "mamba", seq_len=8))
    assert r.status == "ok", r.error
    assert values(r)[("prefill_step_loop_layers", "value")] == 2 and r.info["prefill_path"] == "step_loop"
    assert "?" not in r.info["backend"]


def test_cuda_graphs_option(tiny_case):
    assert use_cuda_graphs(case(tiny_case, "mamba")) is False  # off by default on CPU
    on_cpu = case(tiny_case, "mamba", model_options=(("cuda_graphs", True),))
    with pytest.raises(ValueError, match="needs device cuda"):
        use_cuda_graphs(on_cpu)
    result, _ = execute(on_cpu)  # through the worker: a status row, not a crash
    assert result.status == "error" and "cuda" in result.error
    assert use_cuda_graphs(case(tiny_case, "mamba", model_options=(("cuda_graphs", "false"),))) is False
    with pytest.raises(ValueError, match="true or false"):
        use_cuda_graphs(case(tiny_case, "mamba", model_options=(("cuda_graphs", "maybe"),)))


@pytest.mark.parametrize(("model", "n_ops"), [("transformer", 2 * 5 + 1), ("mamba", 2 * 4 + 1)])
def test_matmul_replay_sees_every_matmul_of_a_step(model, n_ops):
    # transformer layer: qkv, attention, out, fc1, fc2; mamba layer: in_proj, x_proj, dt_proj, out_proj; + LM head
    torch.manual_seed(0)
    # mamba with its PyTorch scan: the fused C++ step (the CPU default) hides its matmuls from the recorder
    backend = "chunked" if model == "mamba" else "auto"
    m = make_config(model, backend=backend, d_model=32, n_layers=2, vocab_size=32).build().eval()
    with torch.inference_mode():
        cache = m.allocate_inference_cache(1, 8)
        logits, _ = prefill(m, torch.zeros(1, 4, dtype=torch.long), cache)
        first = logits.argmax(-1)
        decoder = GreedyDecoder(m, cache, first)
        snap = CacheSnapshot.take(m, cache, 1, torch.float32)
        positions = []

        def rewind() -> None:
            snap.restore(cache)
            decoder.reset(first)
            positions.append(cache[0].get("pos"))

        fraction, matmul_s, step_s, counted = step_overhead(decoder, rewind, repeats=3)
    assert counted == n_ops and matmul_s > 0 and step_s > 0
    assert fraction == pytest.approx(min(1.0, max(0.0, 1.0 - matmul_s / step_s)))
    assert len(set(positions)) == 1  # every timed step ran at the same position


@torch.inference_mode()
def test_greedy_generation_matches_argmax_of_the_forward():
    torch.manual_seed(0)
    model = make_config("mamba", d_model=32, n_layers=2, vocab_size=32).build().double()
    prompt = torch.randint(0, 32, (2, 9), generator=torch.Generator().manual_seed(1))
    res = generate(model, prompt, 6)
    assert res.tokens.shape == (2, 6) and len(res.token_latencies_s) == 5
    seq = torch.cat([prompt, res.tokens[:, :-1]], dim=1)
    expected = model(seq)[:, 8:].argmax(-1)  # the token after each prefix
    assert torch.equal(res.tokens, expected)
    assert res.ttft_s > 0 and res.tokens_per_s > 0 and res.prefill_path == "native"


@torch.inference_mode()
def test_snapshot_copies_fixed_state_but_not_the_kv_buffers():
    model = make_config("transformer", d_model=32, n_layers=1, vocab_size=32).build()
    cache = model.allocate_inference_cache(1, 10)
    prefill(model, torch.zeros(1, 3, dtype=torch.long), cache)
    snap = CacheSnapshot.take(model, cache, 1, torch.float32)
    attn = snap.snap[0]
    assert not isinstance(attn["k"], torch.Tensor) and not isinstance(attn["v"], torch.Tensor)
    assert attn["pos"] == 3 and isinstance(attn["pos_t"], torch.Tensor)
    assert snap.bytes_per_position == 2 * 32 * 4 and snap.bytes_at(3) == 3 * 2 * 32 * 4 + 8
    model.step(torch.zeros(1, dtype=torch.long), cache)
    assert cache[0]["pos"] == 4
    snap.restore(cache)
    assert cache[0]["pos"] == 3


def test_decode_sweep_end_to_end_into_the_store(tmp_path):
    spec = SweepSpec(models=(ModelSpec("mamba"), ModelSpec("transformer")), lengths=(16, 32), modes=("decode",),
                     device="cpu", batches=(1,), d_model=32, n_layers=1, vocab_size=32, warmup=1, samples=2,
                     budget_s=0.0, decode_tokens=K, threads=1)
    cases = plan_sweep(spec)
    assert len(cases) == 4 and all(c.option("decode_tokens") == K for c in cases)
    summary = run_cases(cases, tmp_path, in_process=True)
    assert summary.failed == 0
    df = store.load(tmp_path)
    sb = df[(df.metric == "state_bytes")].set_index(["model", "seq_len"]).value
    assert sb[("transformer", 32)] > sb[("transformer", 16)] and sb[("mamba", 32)] == sb[("mamba", 16)]


def test_generate_cli():
    r = subprocess.run([sys.executable, "-m", "ssmbench", "generate", "--model", "mamba", "--prompt-len", "16",
                        "--new-tokens", "4", "--d-model", "32", "--device", "cpu"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    assert "time to first token" in out and "tokens/s" in out and "Random weights" in out
    bad = subprocess.run([sys.executable, "-m", "ssmbench", "generate", "--model", "mamba,transformer"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "one model" in bad.stderr and "Traceback" not in bad.stderr
