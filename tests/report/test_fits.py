"""The 'longest L that fits in M' section: measured where an OOM bounds it, predicted beyond."""

import math

import pytest

from ssmbench import store
from ssmbench.report.build import build_report
from ssmbench.report.fits import fits_table, predicted_longest
from ssmbench.store import CaseResult, Metric

CAP = 3 * 2**30


def test_predicted_longest_solves_the_polynomial():
    per_token = {"const": 0, "per_seq": 0, "per_token": 1024.0, "per_length": 0, "per_token_len": 0}
    assert predicted_longest(per_token, 0, 1, 2**30) == pytest.approx(2**20, rel=1e-6)
    quad = dict(per_token, per_token=0.0, per_token_len=16.0)
    assert predicted_longest(quad, 2**29, 1, 2**30) == pytest.approx(math.sqrt(2**29 / 16), rel=1e-6)
    assert predicted_longest(per_token, 2**31, 1, 2**30) == 0.0


def _coeffs(per_token=0.0, per_token_len=0.0):
    return [Metric("peak_mem_est", k, v, "B") for k, v in (("const", 0.0), ("per_seq", 0.0), ("per_token", per_token),
                                                           ("per_length", 0.0), ("per_token_len", per_token_len))]


def test_section_from_a_capped_sweep(tmp_path, tiny_case):
    # mamba: ok at 16k and 32k, OOM at 64k, skipped beyond; transformer: OOM at once, everything else skipped
    for length, status in ((16384, "ok"), (32768, "ok"), (65536, "oom"), (131072, "skipped")):
        case = tiny_case(model="mamba", seq_len=length, batch=1, max_memory=CAP)
        metrics = [*_coeffs(per_token=40_000.0), Metric("param_bytes", "value", 4e6, "B"),
                   Metric("peak_mem_est", "value", 40_000.0 * length, "B")]
        if status == "ok":
            metrics += [Metric("peak_mem_delta", "max", 50_000.0 * length, "B"), Metric("time", "median", 1, "s"),
                        Metric("time", "q25", 1, "s"), Metric("time", "q75", 1, "s"),
                        Metric("tokens_per_s", "median", length, "tok/s")]
        store.write_case(tmp_path, "r", case, CaseResult(status=status, info={"backend": "auto", "params": 10},
                                                         metrics=metrics if status != "skipped" else None))
    store.write_case(tmp_path, "r", tiny_case(model="transformer", backend="math", seq_len=16384, batch=1,
                                              max_memory=CAP),
                     CaseResult(status="oom", metrics=[*_coeffs(per_token_len=48.0),
                                                       Metric("param_bytes", "value", 6e6, "B")]))
    table = fits_table(store.load(tmp_path)).set_index("model")
    assert table.loc["mamba", "longest_ok"] == 32768 and table.loc["mamba", "first_oom"] == 65536
    assert table.loc["mamba", "skipped"] == 1
    assert table.loc["mamba", "est_over_measured"] == [pytest.approx(0.8), pytest.approx(0.8)]
    assert table.loc["mamba", "predicted"] == pytest.approx((CAP - 4e6) / 40_000, rel=1e-3)
    assert table.loc["transformer", "predicted"] == pytest.approx(math.sqrt((CAP - 6e6) / 48), rel=1e-3)
    md = build_report(tmp_path, tmp_path / "out").markdown.read_text()
    assert "## Longest L that fits in M" in md
    assert "| 3 GiB | mamba (auto) | fwd | 1 | 32k | 64k | 1 |" in md and "32k (measured; < 64k)" in md
    assert "< 16k (measured)" in md
