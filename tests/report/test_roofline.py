"""The roofline section: intensity, achieved throughput against the run's peaks, binding ceiling; energy rows."""

import pandas as pd
import pytest

from ssmbench import store
from ssmbench.report.build import build_report
from ssmbench.report.roofline import attach_peaks, roofline_table
from ssmbench.store import CaseResult, Metric

PEAK_F, PEAK_B = 100e9, 10e9  # ridge at 10 FLOP/byte


def _dataset(root, tiny_case, energy=False):
    store.write_run(root, "r", {"peak_flops": str(PEAK_F), "peak_bandwidth": str(PEAK_B)})
    # (model, L, FLOPs, bytes, time): intensity 2 (memory-bound, at 50% of its roof) and 100 (compute-bound)
    for model, length, flops, moved, t in (("mamba", 256, 2e9, 1e9, 0.2), ("transformer", 256, 100e9, 1e9, 2.0)):
        metrics = [Metric("time", "median", t, "s"), Metric("time", "q25", t, "s"), Metric("time", "q75", t, "s"),
                   Metric("tokens_per_s", "median", length / t, "tok/s"), Metric("flops", "value", flops, "FLOP"),
                   Metric("bytes", "value", moved, "B")]
        if energy:
            metrics += [Metric("energy_per_token", "value", 0.004, "J/token"), Metric("power", "mean", 300, "W"),
                        Metric("sm_clock", "median", 1980, "MHz")]
        store.write_case(root, "r", tiny_case(model=model, seq_len=length, batch=1),
                         CaseResult(metrics=metrics, info={"backend": "x", "params": 10}))


def test_table_percentages_and_binding_ceiling(tmp_path, tiny_case):
    _dataset(tmp_path, tiny_case)
    df = attach_peaks(store.load(tmp_path), store.load_runs(tmp_path))
    t = roofline_table(df).set_index("model")
    assert t.loc["mamba", "intensity"] == 2 and t.loc["mamba", "binding"] == "memory"
    assert t.loc["mamba", "pct_bandwidth"] == pytest.approx(50) and t.loc["mamba", "pct_roof"] == pytest.approx(50)
    assert t.loc["transformer", "binding"] == "compute" and t.loc["transformer", "pct_flops"] == pytest.approx(50)


def test_no_peaks_no_section(tmp_path, tiny_case):
    store.write_case(tmp_path, "r", tiny_case(), CaseResult(metrics=[Metric("flops", "value", 1, "FLOP")]))
    df = attach_peaks(store.load(tmp_path), pd.DataFrame(columns=["run_id"]))
    assert roofline_table(df).empty


def test_report_has_figure_table_and_energy(tmp_path, tiny_case):
    _dataset(tmp_path / "res", tiny_case, energy=True)
    res = build_report(tmp_path / "res", tmp_path / "out")
    md = res.markdown.read_text()
    assert "## Roofline" in md and "ridge 10.0 FLOP/byte" in md and "| memory | 50.0% |" in md
    assert "### Energy" in md and "| 0.004 | 300 | 1980 |" in md
    fig = [p for p in res.figures if p.name.startswith("roofline_")]
    assert fig and fig[0].stat().st_size > 10_000
