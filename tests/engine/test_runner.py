"""The runner turns raises, hangs and crashes into status rows and keeps going; re-runs resume."""

from dataclasses import replace

from ssmbench import store
from ssmbench.engine.runner import plan_sweep, run_cases, select_pending
from ssmbench.spec import SweepSpec, parse_models


def test_plan_sweep_equal_tokens():
    spec = SweepSpec(models=parse_models("mamba,transformer"), lengths=(256, 1024), modes=("fwd", "fwdbwd"),
                     device="cpu", tokens=4096)
    cases = plan_sweep(spec)
    assert len(cases) == 8
    assert {c.batch * c.seq_len for c in cases} == {4096}
    assert [c.seq_len for c in cases][:4] == [256] * 4  # short lengths first


def test_plan_sweep_explicit_batches():
    spec = SweepSpec(models=parse_models("mamba"), lengths=(64,), batches=(1, 8), device="cpu")
    assert sorted(c.batch for c in plan_sweep(spec)) == [1, 8]


def test_failures_become_rows_and_sweep_continues(tmp_path, tiny_case):
    cases = [
        tiny_case(model_options=(("fault", "raise"),)),
        tiny_case(model_options=(("fault", "hang"),), timeout_s=4.0),
        tiny_case(model_options=(("fault", "crash"),)),
        tiny_case(model_options=(("fault", "oom"),)),
        tiny_case(),  # a healthy case after all of them still runs in a fresh worker
    ]
    summary = run_cases(cases, tmp_path)
    statuses = [o.result.status for o in summary.outcomes]
    assert statuses == ["error", "timeout", "error", "oom", "ok"]
    errors = [o.result.error for o in summary.outcomes]
    assert "deliberate failure" in errors[0]
    assert "4 s" in errors[1]
    assert "SIGKILL" in errors[2]
    df = store.load(tmp_path)
    assert df.case_id.nunique() == 5
    ok = df[(df.status == "ok") & (df.metric == "time") & (df.stat == "median")]
    assert len(ok) == 1 and ok.iloc[0].value > 0


def test_resume_skips_finished_and_retry_failed(tmp_path, tiny_case):
    good = tiny_case()
    bad = tiny_case(model_options=(("fault", "raise"),))
    run_cases([good, bad], tmp_path, in_process=True)
    to_run, done = select_pending([good, bad], tmp_path, resume=True, force=False, retry_failed=False)
    assert to_run == [] and set(done) == {good, bad}
    to_run, _ = select_pending([good, bad], tmp_path, resume=True, force=False, retry_failed=True)
    assert to_run == [bad]
    to_run, _ = select_pending([good, bad], tmp_path, resume=True, force=True, retry_failed=False)
    assert to_run == [good, bad]


def test_killed_sweep_resumes_without_duplicates_or_loss(tmp_path, tiny_case):
    """Simulate a kill after the first case: only finished parts exist; the re-run completes the rest."""
    cases = [tiny_case(seq_len=n) for n in (8, 16, 32)]
    run_cases(cases[:1], tmp_path, in_process=True)
    first = store.load(tmp_path)
    # a half-written temporary file from the killed process must not count
    (tmp_path / "parts" / ".deadbeef.parquet.123.tmp").write_bytes(b"partial")
    summary = run_cases(cases, tmp_path, in_process=True)
    assert len(summary.executed) == 2
    df = store.load(tmp_path)
    assert df.case_id.nunique() == 3
    assert df.groupby(["case_id", "metric", "stat"]).size().max() == 1
    kept = df[df.case_id == cases[0].case_id]
    assert set(kept.run_id) == set(first.run_id)  # the finished case was not re-run


def test_in_process_matches_worker_fields(tmp_path, tiny_case):
    """The same case in a worker process and in this process yields the same metric rows and info fields."""
    case = replace(tiny_case(model="transformer"), mode="fwdbwd")
    (worker,) = run_cases([case], tmp_path / "worker").outcomes
    (local,) = run_cases([case], tmp_path / "local", in_process=True).outcomes
    for o in (worker, local):
        assert o.result.status == "ok", o.result.error
    metrics = {(m.metric, m.stat) for m in worker.result.metrics}
    assert {("time", "median"), ("time", "q25"), ("time", "q75"), ("tokens_per_s", "median"),
            ("first_call", "value"), ("params", "value"), ("flops", "value")} <= metrics
    assert {(m.metric, m.stat) for m in local.result.metrics} == metrics
    assert set(local.result.info) == set(worker.result.info)
    assert worker.result.info["backend"] == local.result.info["backend"] != "auto"
    stored = {p: store.load(tmp_path / p) for p in ("worker", "local")}
    assert {p: sorted(df.columns) for p, df in stored.items()}["worker"] == sorted(stored["local"].columns)


def test_run_records_the_workers_thread_count(tmp_path, tiny_case):
    # the parent runs with torch's default threads; the worker measured with --threads 1
    run_cases([tiny_case(threads=1)], tmp_path)
    runs = store.load_runs(tmp_path)
    assert list(runs.torch_threads) == ["1"]


def test_plan_sweep_compile_both_is_a_case_dimension_that_keeps_eager_ids():
    spec = SweepSpec(models=parse_models("mamba,s4"), lengths=(64,), device="cpu", compile=("eager", "compiled"))
    cases = plan_sweep(spec)
    assert [(c.model, c.compile) for c in cases] == [("mamba", "eager"), ("mamba", "compiled"), ("s4", "eager"),
                                                     ("s4", "compiled")]
    eager = plan_sweep(SweepSpec(models=parse_models("mamba,s4"), lengths=(64,), device="cpu"))
    assert [c.case_id for c in cases if c.compile == "eager"] == [c.case_id for c in eager]  # resumable as before
    assert len({c.case_id for c in cases}) == 4 and "compiled" in cases[1].label()
