"""Per-case load metrics: a real CPU-burning neighbour makes a case 'contended'; report and check flag it."""

import subprocess
import sys
import time

import pandas as pd

from ssmbench.contention import LoadProbe, describe, is_contended
from ssmbench.gate.run import Measurements
from ssmbench.report.contention import contended_cases, contention_section
from ssmbench.store import Metric


def test_a_cpu_burning_neighbour_is_seen_as_contention():
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start spinning
        with LoadProbe() as probe:
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 0.6:
                time.sleep(0.01)  # this process idles: the busy CPU is someone else's
        metrics = probe.metrics()
    finally:
        burner.kill()
        burner.wait()
    values = {(m.metric, m.stat): m.value for m in metrics}
    assert values[("other_cpu", "mean")] >= 0.5  # the neighbour used (about) one core
    assert values[("cpu_time", "value")] < 0.3 and values[("wall_time", "value")] >= 0.6
    assert is_contended(metrics) and "other processes used" in describe(metrics)


def _rows(case_id: str, contended: float) -> list[dict]:
    base = {"case_id": case_id, "model": "mamba", "backend": "auto", "mode": "fwd", "seq_len": 64, "batch": 2}
    return [{**base, "metric": "time", "stat": "median", "value": 1e-3},
            {**base, "metric": "other_cpu", "stat": "mean", "value": 1.2 * contended},
            {**base, "metric": "load_avg", "stat": "before", "value": 3.0},
            {**base, "metric": "load_avg", "stat": "after", "value": 3.5},
            {**base, "metric": "contended", "stat": "value", "value": contended}]


def test_report_lists_only_contended_cases(tmp_path):
    df = pd.DataFrame(_rows("a", 1.0) + _rows("b", 0.0))
    rows = contended_cases(df)
    assert list(rows.case_id) == ["a"]
    lines, figures = contention_section(df, tmp_path)
    assert "## Contended timings" in lines and any("1 of 2 case(s)" in x for x in lines) and not figures
    assert any(x == "| mamba:auto fwd L=64 b=2 | 1.20 | 3.0 -> 3.5 |" for x in lines)
    assert contention_section(pd.DataFrame(_rows("b", 0.0)), tmp_path) == ([], [])


def test_check_notes_contended_rounds():
    meas = Measurements(contended={("head", "k1"): 2})
    (note,) = meas.contention_note(10)
    assert "2 of 10 rounds" in note and "1 case(s)" in note
    assert Measurements().contention_note(10) == []
    assert not is_contended([Metric("contended", "value", 0.0, "")])
