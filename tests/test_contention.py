"""Per-case load metrics: a real CPU-burning neighbour makes a case 'contended'; report and check flag it."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd

from ssmbench.contention import LoadProbe, describe, is_contended
from ssmbench.gate.run import Measurements
from ssmbench.report.contention import contended_cases, contention_section
from ssmbench.store import Metric


def _neighbour() -> int:
    """pid of a CPU-burning process that is not a descendant of this one (started by a shell that exits at once,
    so it is re-parented): a neighbour, as another user's job would be."""
    out = subprocess.run(["sh", "-c", f"'{sys.executable}' -c 'while True: pass' >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def _idle_for(seconds: float) -> None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        time.sleep(0.01)


def test_a_cpu_burning_neighbour_is_seen_as_contention():
    burner = _neighbour()
    try:
        time.sleep(0.3)  # let it start spinning
        with LoadProbe() as probe:
            _idle_for(0.6)  # this process idles: the busy CPU is someone else's
        metrics = probe.metrics()
    finally:
        os.kill(burner, signal.SIGKILL)
    values = {(m.metric, m.stat): m.value for m in metrics}
    assert values[("other_cpu", "mean")] >= 0.5  # the neighbour used (about) one core
    assert values[("cpu_time", "value")] < 0.3 and values[("wall_time", "value")] >= 0.6
    assert is_contended(metrics) and "other processes used" in describe(metrics)


def test_the_cases_own_child_processes_are_its_own_work_not_contention():
    """A compiled case runs compilers (reaped children) and keeps a compile pool (live children): their CPU time is
    the case's, or every compiled case would be flagged contended."""
    code = "import time\nt = time.process_time()\nwhile time.process_time() - t < {}: pass\n{}"
    with LoadProbe() as probe:
        subprocess.run([sys.executable, "-c", code.format(0.4, "")], check=True)  # reaped before the probe ends
        pool = subprocess.Popen([sys.executable, "-c", code.format(0.4, "time.sleep(30)")])  # alive at the end
        _idle_for(1.0)
    pool.kill()
    pool.wait()
    values = {(m.metric, m.stat): m.value for m in probe.metrics()}
    # both children's 0.4 s (interpreter start-up adds to it) count as the case's own CPU time, and other_cpu is
    # the machine's busy time minus exactly this
    assert values[("cpu_time", "value")] >= 0.7


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
