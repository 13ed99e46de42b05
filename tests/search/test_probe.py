"""The real search end to end on tiny models: probes stored as tagged speed rows, the answer as JSON."""

import json
import subprocess
import sys

import pytest

from ssmbench import store
from ssmbench.case import Case
from ssmbench.search.probe import combine_rounds, probe_cases
from ssmbench.spec import SweepSpec, parse_models
from ssmbench.store import CaseResult, Metric


def test_probe_cases_follow_the_sweep_rules():
    spec = SweepSpec(models=parse_models("mamba,transformer"), lengths=(64, 128), device="cpu", tokens=1024,
                     d_model=32, model_options=(("d_state", 8),))
    a, b = probe_cases(spec, 96, "xo-1")
    assert (a.model, b.model) == ("mamba", "transformer")
    assert a.batch == b.batch == 1024 // 96 and a.seq_len == 96 and a.search == b.search == "xo-1"
    assert a.model_options == (("d_state", 8),) and a.option("measure_memory") is False


def test_combine_rounds_summarises_the_rounds():
    case = Case(kind="speed", model="mamba", backend="auto", mode="fwd", device="cpu", dtype="float32", batch=2,
                seq_len=8, d_model=8, n_layers=1)
    last = CaseResult(metrics=[Metric("time", "median", 9.0, "s"), Metric("flops", "value", 100.0, "FLOP"),
                               Metric("params", "value", 5, "count")], info={"backend": "x"})
    r = combine_rounds(case, [1.0, 3.0, 2.0], last)
    m = {(x.metric, x.stat): x for x in r.metrics}
    assert m["time", "median"].value == 2.0 and m["time", "median"].samples == (1.0, 3.0, 2.0)
    assert m["tokens_per_s", "median"].value == 8.0 and m["achieved_flops", "median"].value == 50.0
    assert m["params", "value"].value == 5 and r.info == {"backend": "x", "rounds": 3}


@pytest.mark.slow  # tens of seconds of real measurement: `make test-slow` (CI runs it)
def test_cli_json_end_to_end(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ssmbench", "crossover", "--models", "mamba,transformer", "-L",
                        "16..32", "--device", "cpu", "--d-model", "16", "--n-layers", "1", "--tokens", "64",
                        "--threads", "1", "--width", "5", "--budget", "60", "--json", "-o", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert {"crossover_len", "interval", "faster_above", "probes", "answer"} <= set(answer)
    assert answer["answer"] in ("crosses", "never_crosses", "crosses_more_than_once", "indistinguishable")
    probed = {p["length"] for p in answer["probes"]}
    assert probed and probed <= {16, 32}
    df = store.load(tmp_path)
    tags = {json.loads(c)["search"] for c in df.case}
    assert tags == {answer["search_id"]}
    rows = df[(df.metric == "time") & (df.stat == "median")]
    assert set(rows.seq_len) == probed and set(rows.model) == {"mamba", "transformer"}
    assert all(len(s) == p["rounds"] for s, p in zip(rows.sort_values("seq_len").samples[::2],
                                                      sorted(answer["probes"], key=lambda p: p["length"]),
                                                      strict=False))
    assert [s["search_id"] for s in store.load_searches(tmp_path)] == [answer["search_id"]]


def test_cli_rejects_bad_input():
    for args, message in ((["--models", "mamba"], "exactly two"), (["--models", "mamba,transformer", "-L", "100,300"],
                          "powers of two"), (["--models", "mamba,transformer", "--budget", "0"], "--budget")):
        r = subprocess.run([sys.executable, "-m", "ssmbench", "crossover", *args], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_pair_case_times_both_sides_round_by_round():
    from ssmbench.bench.pair import pair_case, run_pair_case

    spec = SweepSpec(models=parse_models("mamba,transformer"), lengths=(32,), device="cpu", tokens=64, d_model=16,
                     n_layers=1, threads=1)
    a, b = probe_cases(spec, 32, "xo-2")
    result = run_pair_case(pair_case(a, b, rounds=4, offset=1))
    m = {(x.metric, x.stat): x for x in result.metrics}
    assert len(m["round_time", "a"].samples) == len(m["round_time", "b"].samples) == 4
    assert all(t > 0 for t in m["round_time", "a"].samples + m["round_time", "b"].samples)
    assert m["params", "a"].value != m["params", "b"].value and m["flops", "b"].value > 0
    assert result.info["backend_a"] and result.info["backend_b"]


@pytest.mark.slow
def test_cli_decode_mode_runs_whole_cases_per_round(tmp_path):
    """decode is not a pair mode: each round runs A's and B's whole decode case (time = per generated token)."""
    r = subprocess.run([sys.executable, "-m", "ssmbench", "crossover", "--models", "mamba,transformer", "-L", "16..32",
                        "--mode", "decode", "--decode-tokens", "4", "--device", "cpu", "--d-model", "16",
                        "--n-layers", "1", "--tokens", "32", "--threads", "1", "--width", "5", "--budget", "60",
                        "--json", "-o", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert answer["mode"] == "decode" and all(p["rounds"] >= 7 for p in answer["probes"])
    df = store.load(tmp_path)
    assert set(df[df.metric == "token_latency"].model) == {"mamba", "transformer"}
