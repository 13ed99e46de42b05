"""The decode report section: latency/state tables and figures, crossover context, registration in report.py."""

from __future__ import annotations

import pytest

from ssmbench import store
from ssmbench.report.build import SECTIONS, build_report
from ssmbench.report.decode import decode_crossovers, decode_section, decode_table
from ssmbench.store import CaseResult, Metric

LENGTHS = (1024, 2048, 4096, 8192, 16384)
KV_PER_TOKEN = 2 * 2 * 256 * 4  # k and v, 2 layers, d_model 256, float32


def _decode_result(model: str, seq_len: int, batch: int) -> CaseResult:
    """Transformer: latency 1e-7·L s per token and a KV cache linear in L; mamba: 4e-4 s flat, fixed state.

    They cross at L = 4000. Latencies scale with neither batch (decode at small batch is latency-bound).
    """
    attention = model == "transformer"
    p50 = 1e-7 * seq_len if attention else 4e-4
    state = KV_PER_TOKEN * batch * seq_len if attention else 2 * batch * 512 * 20 * 4
    metrics = [Metric("time", "median", p50, "s", 64), Metric("time", "min", 0.5 * p50, "s", 64),
               Metric("token_latency", "p50", p50, "s", 64),
               Metric("token_latency", "p90", 1.2 * p50, "s", 64), Metric("token_latency", "p99", 1.5 * p50, "s", 64),
               Metric("tokens_per_s", "median", batch / p50, "tok/s", 2), Metric("ttft", "value", 1e-6 * seq_len, "s"),
               Metric("state_bytes", "value", state, "B"), Metric("cuda_graphs", "value", 0.0, "bool"),
               Metric("step_overhead_fraction", "value", 0.2 if attention else 0.9, "fraction")]
    return CaseResult(metrics=metrics, info={"backend": "x", "params": 1000, "d_model": 256, "n_layers": 2})


def _dataset(root, tiny_case) -> None:
    for seq_len in LENGTHS:
        for batch in (1, 8):
            for model in ("transformer", "mamba"):
                case = tiny_case(model=model, mode="decode", seq_len=seq_len, batch=batch, d_model=256, n_layers=2)
                store.write_case(root, "r", case, _decode_result(model, seq_len, batch))
        prefill = tiny_case(model="mamba", mode="prefill", seq_len=seq_len, batch=1, d_model=256, n_layers=2)
        store.write_case(root, "r", prefill, CaseResult(metrics=[Metric("time", "median", 2e-6 * seq_len, "s", 5)],
                                                        info={"backend": "x", "params": 1000}))
    fwd = tiny_case(model="mamba", seq_len=1024, batch=1, d_model=256, n_layers=2)  # a fwd case: not decode
    store.write_case(root, "r", fwd, CaseResult(metrics=[Metric("time", stat, 1.0, "s", 5) for stat in
                                                         ("median", "q25", "q75")]
                                                + [Metric("tokens_per_s", "median", 1024.0, "tok/s", 5)],
                                                info={"backend": "x", "params": 1000}))


def test_decode_table_and_crossover(tmp_path, tiny_case):
    _dataset(tmp_path, tiny_case)
    df = store.load(tmp_path)
    table = decode_table(df)
    assert len(table) == 2 * 2 * len(LENGTHS) and set(table.model) == {"transformer", "mamba"}
    crossings = decode_crossovers(table)
    assert len(crossings) == 2  # one per batch size
    for _, text in crossings:
        assert "mamba (x)" in text and "decodes faster than transformer (x) from L ≈ 3.9k" in text  # 4000


def test_decode_section_markdown_and_figures(tmp_path, tiny_case):
    _dataset(tmp_path / "res", tiny_case)
    df = store.load(tmp_path / "res")
    out = tmp_path / "out"
    out.mkdir()
    lines, figures = decode_section(df, out)
    md = "\n".join(lines)
    assert len(figures) == 1 and figures[0].stat().st_size > 10_000
    assert "## Decode" in md and f"![{figures[0].stem}]" in md
    assert "| mamba (x) b=1 | 400 µs | 400 µs | 400 µs | 400 µs | 400 µs |" in md  # flat latency row
    assert "| transformer (x) b=1 | 102 µs | 205 µs | 410 µs | 819 µs | 1.64 ms |" in md
    assert "fastest token" in md and "| transformer (x) b=1 | 51.2 µs | 102 µs | 205 µs | 410 µs | 819 µs |" in md
    assert "| transformer (x) b=1 | 4 MiB | 8 MiB | 16 MiB | 32 MiB | 64 MiB |" in md  # KV grows with L
    assert "| mamba (x) b=1 | 80 KiB | 80 KiB | 80 KiB | 80 KiB | 80 KiB |" in md  # the state does not
    assert "transformer (x) b=1: latency ~ L^1.00" in md and "mamba (x) b=1: latency ~ L^0.00" in md
    # throughput row: batch 8 at 16k, with the prefill median joined in for mamba b=1 only
    assert "| mamba (x) | 8 | 16k | 20,000 | 400 µs | 480 µs | 600 µs | 16.4 ms | – | 640 KiB | 90% |" in md
    assert "| mamba (x) | 1 | 16k | 2,500 | 400 µs | 480 µs | 600 µs | 16.4 ms | 32.8 ms | 80 KiB | 90% |" in md
    assert "Overhead-bound decode (mamba)" in md


def test_section_is_registered_and_empty_without_decode_rows(tmp_path, tiny_case):
    assert "ssmbench.report.decode:decode_section" in SECTIONS
    fwd = tiny_case(model="mamba", seq_len=64)
    store.write_case(tmp_path / "res", "r", fwd, CaseResult(metrics=[Metric("time", "median", 1.0, "s", 5)],
                                                            info={"backend": "x", "params": 1000}))
    assert decode_section(store.load(tmp_path / "res"), tmp_path) == ([], [])


def test_full_report_includes_the_decode_section(tmp_path, tiny_case):
    _dataset(tmp_path / "res", tiny_case)
    res = build_report(tmp_path / "res", tmp_path / "out")
    md = res.markdown.read_text()
    assert "## Decode" in md and any(p.name.startswith("decode_") for p in res.figures)
    assert "decodes faster than" in md


@pytest.mark.parametrize(("ssm_latency", "expected"), [(1e-9, "at every measured context"),
                                                        (1.0, "slower than transformer (x) at every")])
def test_crossover_edge_cases(tmp_path, tiny_case, ssm_latency, expected):
    for seq_len in LENGTHS[:3]:
        store.write_case(tmp_path, "r", tiny_case(model="transformer", mode="decode", seq_len=seq_len, batch=1),
                         _decode_result("transformer", seq_len, 1))
        flat = _decode_result("mamba", seq_len, 1)
        flat.metrics = [Metric(m.metric, m.stat, ssm_latency if m.metric == "token_latency" else m.value, m.unit)
                        for m in flat.metrics]
        store.write_case(tmp_path, "r", tiny_case(model="mamba", mode="decode", seq_len=seq_len, batch=1), flat)
    ((_, text),) = decode_crossovers(decode_table(store.load(tmp_path)))
    assert expected.replace("context", "length") in text
