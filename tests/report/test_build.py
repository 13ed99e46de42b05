import math

import pytest

from ssmbench import store
from ssmbench.report.build import build_report
from ssmbench.report.common import find_crossover, fit_exponent, format_length
from ssmbench.store import CaseResult, Metric


def test_fit_exponent_quadratic_and_linear():
    lengths = [256, 512, 1024, 2048, 4096]
    assert fit_exponent(lengths, [3e-9 * n**2 for n in lengths]) == pytest.approx(2.0, abs=0.05)
    assert fit_exponent(lengths, [1e-6 * n for n in lengths]) == pytest.approx(1.0, abs=0.05)
    # only the last points count: a flat start does not drag the slope down
    assert fit_exponent(lengths, [1.0, 1.0, 1e-6 * 1024**2, 1e-6 * 2048**2, 1e-6 * 4096**2]) == pytest.approx(2.0)
    assert math.isnan(fit_exponent([1024], [1.0]))


def test_crossover_interpolates_in_log_log():
    lengths = [256, 512, 1024, 2048, 4096]
    attn = [1e-9 * n**2 for n in lengths]
    ssm = [1e-9 * 1024 * n for n in lengths]  # equal at exactly L = 1024
    c = find_crossover(lengths, ssm, attn)
    assert c.relation == "at" and c.length == pytest.approx(1024, rel=1e-6)
    ssm_shifted = [1e-9 * 1500 * n for n in lengths]
    c = find_crossover(lengths, ssm_shifted, attn)
    assert c.length == pytest.approx(1500, rel=1e-6)


def test_crossover_edge_cases():
    assert find_crossover([1, 2], [1, 1], [2, 2]).relation == "always_faster"
    assert find_crossover([1, 2], [3, 3], [2, 2]).relation == "never_faster"
    # faster at short lengths, slower at long ones: it wins only below the crossing
    c = find_crossover([1, 2, 4], [1, 2, 8], [2, 2.5, 4])
    assert c.relation == "below" and 2 < c.length < 4 and "only below" in c.describe()
    c = find_crossover([1, 2, 4, 8], [3, 1, 5, 5], [2, 2, 4, 4])  # slower, faster, slower, slower: no single L*
    assert c.relation == "mixed" and c.faster_at == (2,) and c.length is None
    # noise that dips below and back above counts as not yet crossed: last sign change wins
    c = find_crossover([1, 2, 4, 8], [1, 3, 5, 5], [2, 2, 4, 10])
    assert c.relation == "at" and 4 < c.length < 8


def test_format_length():
    assert format_length(4096) == "4k" and format_length(300) == "300" and format_length(1536) == "1.5k"


def _fake_dataset(root, tiny_case):
    """t = c·L² for the transformer and c'·L for mamba per sequence, equal tokens per batch."""
    tokens = 4096
    for seq_len in (256, 512, 1024, 2048, 4096):
        batch = tokens // seq_len
        for model, per_seq in (("transformer", 2e-9 * seq_len**2), ("mamba", 2e-9 * 1024 * seq_len)):
            t = per_seq * batch
            case = tiny_case(model=model, seq_len=seq_len, batch=batch, d_model=256, n_layers=2)
            result = CaseResult(metrics=[
                Metric("time", "median", t, "s", 5), Metric("time", "q25", 0.9 * t, "s", 5),
                Metric("time", "q75", 1.1 * t, "s", 5), Metric("tokens_per_s", "median", tokens / t, "tok/s", 5),
                Metric("peak_mem_delta", "max", 1e6 * seq_len, "B")],
                info={"backend": "x", "params": 1000, "d_model": 256, "n_layers": 2})
            store.write_case(root, "r", case, result)
    store.write_case(root, "r", tiny_case(model="mamba", seq_len=8192, batch=1, d_model=256, n_layers=2),
                     CaseResult(status="timeout", error="no result within 1 s"))


def test_report_from_small_dataset(tmp_path, tiny_case):
    _fake_dataset(tmp_path / "res", tiny_case)
    res = build_report(tmp_path / "res", tmp_path / "out")
    assert res.markdown.exists() and res.figures and all(p.stat().st_size > 10_000 for p in res.figures)
    exps = {k.split(" d256x2 ")[1]: v for k, v in res.exponents.items()}
    assert exps["transformer (x)"] == pytest.approx(2.0, abs=0.05)
    assert exps["mamba (x)"] == pytest.approx(1.0, abs=0.05)
    (c,) = res.crossovers
    assert c.relation == "at" and c.length == pytest.approx(1024, rel=0.01)
    md = res.markdown.read_text()
    assert "from L ≈ 1k" in md
    assert "| mamba | fwd | 8k | 1 | timeout |" in md
    assert "## Fairness" in md


def test_report_tells_compiled_labels_from_eager_ones():
    from ssmbench.models.compile import compiled_label
    from ssmbench.report.common import is_compiled

    assert is_compiled(compiled_label("compiled+sdpa", True))
    assert not is_compiled(compiled_label("compiled+sdpa", False))


def test_crossovers_compare_within_one_compile_mode():
    """An SSM's eager series is compared with attention's eager one only, and compiled with compiled."""
    import pandas as pd

    from ssmbench.report.common import crossovers_vs_attention

    rows = lambda t: pd.DataFrame({"seq_len": [1024, 2048], "t": t})  # noqa: E731
    series = {("mamba", "compiled"): rows([1.0, 2.0]), ("mamba", "compiled+torch.compile"): rows([0.5, 1.0]),
              ("transformer", "sdpa"): rows([2.0, 4.0]), ("transformer", "sdpa+torch.compile"): rows([1.0, 2.0])}
    found = crossovers_vs_attention(series, "t", lambda m, b: f"{m} ({b})")
    assert len(found) == 2  # not 4: no eager-vs-compiled pairs
    for crossover in found:
        ssm_side, attention_side = crossover.describe().split(" than ", 1)
        assert ("torch.compile" in ssm_side) == ("torch.compile" in attention_side), crossover.describe()
