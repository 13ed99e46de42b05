"""`ssmbench check` end to end on a tiny suite: baselines, compatibility errors, injected slowdowns, --against."""

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

import ssmbench
from ssmbench.gate import run as gate
from ssmbench.gate.ab import run_against_ref
from ssmbench.gate.baseline import case_key, read_baseline, write_baseline
from ssmbench.gate.calibrate import Calibration, Normalisation, combine, measure_calibration, normalisation
from ssmbench.gate.summary import render_markdown

# faulty (the hidden test model: an MLP whose `work_factor` adds real compute) and a tiny transformer. The gate
# thresholds in these tests are loose (50-100%) and the injected slowdown large (x6 compute) because the test
# machine may be shared: they test the plumbing; tests/gate/test_stats.py tests the statistics.
SUITE = """
[suite]
name = "{name}"
rounds = {rounds}

[[sweep]]
models = "faulty"
lengths = "{lengths}"
tokens = 1024
d_model = 64
n_layers = 1
vocab_size = 32
samples = 3
budget_s = 0
warmup = 1
threads = 1
timeout_s = 120
"""
TRANSFORMER = """
[[sweep]]
models = "transformer"
lengths = "64,128"
tokens = 1024
d_model = 32
n_layers = 1
vocab_size = 32
samples = 3
budget_s = 0
warmup = 1
threads = 1
timeout_s = 120
"""


def write_suite(path: Path, name: str = "tiny", rounds: int = 5, lengths: str = "128",
                transformer: bool = True) -> Path:
    path.write_text(SUITE.format(name=name, rounds=rounds, lengths=lengths) + (TRANSFORMER if transformer else ""))
    return path


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `ssmbench check ARGS` in this process; (exit code, stdout, stderr)."""
    from ssmbench.cli import main

    monkeypatch.setattr(sys, "argv", ["ssmbench", "check", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def fake_calibration(device: str = "cpu", scale: float = 1.0) -> Calibration:
    return Calibration(device, 1, 3e-3 * scale, 9e-3 * scale, 9)


def fake_baseline(path: Path, suite: Path, *, name: str | None = None, drop: int = 0, device: str = "cpu",
                  scale: float = 1.0) -> Path:
    """A baseline written without measuring: 5 rounds of 1 ms per case."""
    plan = gate.plan_check(suite)
    cases = plan.cases[drop:]
    return write_baseline(path, suite=name or plan.suite.name, suite_path=str(suite), cases=cases,
                          samples={case_key(c): [1e-3] * 5 for c in cases}, rounds=5,
                          calibration=fake_calibration(device, scale))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The tiny suite and a baseline recorded from it on this machine (once for the module)."""
    d = tmp_path_factory.mktemp("gate")
    suite = write_suite(d / "tiny.toml")
    path, meas, cal = gate.record_baseline(gate.plan_check(suite), d / "baselines" / "tiny.parquet")
    return suite, path, meas, cal


def test_case_key_ignores_sampling_settings_only(tiny_case):
    c = tiny_case()
    assert case_key(c) == case_key(replace(c, samples=9, budget_s=3.0, warmup=4, timeout_s=1.0))
    assert case_key(c) != case_key(replace(c, seq_len=32))
    assert case_key(c) != case_key(replace(c, model_options=(("work_factor", 2.0),)))


def test_normalisation_and_calibration():
    n = normalisation(fake_calibration(), Calibration("cpu", 1, 6e-3, 9e-3 * 1.5, 3))
    assert (n.matmul_ratio, n.memory_ratio) == pytest.approx((2.0, 1.5))
    assert n.factor == pytest.approx(3**0.5) and n.worst_shift() == pytest.approx(2.0)
    assert "scaled by x1.732" in n.describe()
    off = Normalisation(2.0, 1.5, mode="none")
    assert off.factor == 1.0 and "not applied" in off.describe()
    suite = Normalisation(2.0, 1.5, mode="suite", suite_ratio=0.8)
    assert suite.factor == 0.8 and "median ratio of the suite's cases" in suite.describe()
    assert combine(fake_calibration(scale=1), fake_calibration(scale=3), fake_calibration(scale=2)).matmul_s == 6e-3
    import torch

    before = torch.get_num_threads()
    cal = measure_calibration("cpu", threads=1, samples=2)
    assert cal.matmul_s > 0 and cal.memory_s > 0 and cal.threads == 1
    assert torch.get_num_threads() == before


def test_recorded_baseline_file(recorded):
    _, path, meas, cal = recorded
    df = pd.read_parquet(path)
    assert len(df) == 3 and set(df.model) == {"faulty", "transformer"}
    assert all(len(s) == 5 and min(s) > 0 for s in df.samples)
    base = read_baseline(path)
    assert base.meta["suite"] == "tiny" and base.meta["rounds"] == 5
    assert base.calibration == cal and base.meta["env"]["cpu"] and base.same_machine()
    assert base.samples == {key: xs for (_, key), xs in meas.values.items()}
    assert not list(path.parent.glob(".*.tmp"))  # atomic write left no temporary file


@pytest.mark.slow  # tens of seconds of real measurement: `make test-slow` (CI runs it)
def test_unchanged_code_passes_and_injected_slowdown_is_flagged(recorded, monkeypatch, capsys, tmp_path):
    suite, path, _, _ = recorded
    step_summary = tmp_path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    code, out, err = run_cli(monkeypatch, capsys, "--suite", suite, "--baseline", path, "--threshold", "1.0",
                             "--summary", tmp_path / "ok.md")
    assert code == 0, out + err
    ok = (tmp_path / "ok.md").read_text()
    assert "no throughput regression" in ok and "the median ratio of the suite's cases" in ok
    assert ok.count("✅ ok") + ok.count("🚀 faster") == 3

    code, out, err = run_cli(monkeypatch, capsys, "--suite", suite, "--baseline", path, "--threshold", "1.0",
                             "--option", "work_factor=6", "--summary", tmp_path / "slow.md")
    assert code == 1, out + err
    slow = (tmp_path / "slow.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in slow.splitlines() if line.startswith("| ")}
    faulty = next(v for k, v in rows.items() if k.startswith("faulty"))
    transformers = [v for k, v in rows.items() if k.startswith("transformer")]
    assert "❌ regression (re-measured; was regression)" in faulty
    assert len(transformers) == 2 and not any("regression" in v for v in transformers)
    assert "1 regression(s): faulty" in slow
    assert step_summary.read_text().count("## ssmbench check") == 2  # appended, not overwritten


def test_failed_and_new_cases(tmp_path):
    """A case that fails now fails the gate; one whose base failed (e.g. a model the ref lacks) is 'new'."""
    plan = gate.plan_check(write_suite(tmp_path / "tiny.toml"), rounds=5)
    k_faulty, *k_transformers = (case_key(c) for c in plan.cases)
    meas = gate.Measurements(values={("head", k): [1e-3] * 5 for k in k_transformers},
                             errors={("head", k_faulty): "error: RuntimeError: boom"})
    checks = gate._collect(plan, meas, lambda key: [1e-3] * 5, paired=False)
    assert [c.verdict for c in checks] == ["failed", "ok", "ok"]
    result = gate.CheckResult("baseline", plan, "test", checks)
    assert result.exit_code == 1 and result.regressions == [checks[0]]
    text = render_markdown(result)
    assert "💥 failed: error: RuntimeError: boom" in text and "1 regression(s): faulty" in text
    meas = gate.Measurements(values={("head", k): [1e-3] * 5 for k in (k_faulty, *k_transformers)},
                             errors={("base", k_faulty): "error: UnknownName"})
    checks = gate._collect(plan, meas, lambda key: [1e-3] * 5, paired=True)
    assert [c.verdict for c in checks] == ["new", "ok", "ok"]
    assert gate.CheckResult("against", plan, "HEAD", checks).exit_code == 0


@pytest.mark.parametrize("normalize", ["suite", "none"])
def test_suite_normalisation_sees_one_slow_case_on_a_faster_machine(normalize, monkeypatch, tmp_path):
    """Synthetic measurements (no workers): the machine is 30% faster than at recording, one case 40% slower."""
    suite = write_suite(tmp_path / "s.toml", lengths="64,128,256,512,1k")
    plan = gate.plan_check(suite, threshold=0.1)
    keys = [case_key(c) for c in plan.cases]
    jitter = [1.0, 1.01, 0.99, 1.02, 0.98]
    write_baseline(tmp_path / "b.parquet", suite=plan.suite.name, suite_path=str(suite), cases=plan.cases,
                   samples={k: [1e-3 * j for j in jitter] for k in keys}, rounds=5, calibration=fake_calibration())
    slow = keys[1]
    calls = []

    def fake_measure(cases, sides, rounds, on_progress=None, probe=None):
        calls.append([case_key(c) for c in cases])
        machine = 0.7 if len(calls) == 1 else 0.6  # the re-measurement runs at another load again
        return gate.Measurements(values={
            ("head", case_key(c)): [1e-3 * machine * (1.4 if case_key(c) == slow else 1.0) * jitter[i % 5]
                                    for i in range(rounds)] for c in cases})

    monkeypatch.setattr(gate, "measure_rounds", fake_measure)
    result = gate.run_against_baseline(plan, tmp_path / "b.parquet", normalize=normalize)
    verdicts = {c.key: c.verdict for c in result.cases}
    if normalize == "none":
        assert result.exit_code == 0 and verdicts[slow] != "regression"  # hidden by the faster machine
        return
    assert result.normalisation.suite_ratio == pytest.approx(0.7)
    assert [k for k, v in verdicts.items() if v == "regression"] == [slow]
    assert slow in calls[1] and 1 < len(calls[1]) <= 1 + gate.SUITE_CONTROLS  # suspect re-measured with controls
    assert any("scaled by x0.600" in n for n in result.notes)


def test_update_baseline_refuses_injected_options(recorded, monkeypatch, capsys, tmp_path):
    suite, _, _, _ = recorded
    code, _, err = run_cli(monkeypatch, capsys, "--suite", suite, "--baseline", tmp_path / "b.parquet",
                           "--update-baseline", "--option", "work_factor=2")
    assert code == 2 and "--update-baseline" in err and not (tmp_path / "b.parquet").exists()


@pytest.mark.parametrize(("make", "message"), [
    (lambda d, s: fake_baseline(d / "b.parquet", s, name="other"), "recorded for suite 'other', not 'tiny'"),
    (lambda d, s: fake_baseline(d / "b.parquet", s, drop=1), "lacks 1 of the 3 cases of suite 'tiny'"),
    (lambda d, s: fake_baseline(d / "b.parquet", s, device="cuda"), "recorded on cuda, this run is on cpu"),
    (lambda d, s: d / "missing.parquet", "not found; record one with"),
    (lambda d, s: pd.DataFrame({"x": [1]}).to_parquet(d / "x.parquet") or d / "x.parquet",
     "not an ssmbench baseline"),
    (lambda d, s: (d / "t.parquet").write_text("not parquet") and d / "t.parquet", "not a readable Parquet file"),
], ids=["other-suite", "missing-cases", "other-device", "missing-file", "foreign-parquet", "not-parquet"])
def test_incompatible_baseline_exits_2(make, message, monkeypatch, capsys, tmp_path):
    suite = write_suite(tmp_path / "tiny.toml")
    code, _, err = run_cli(monkeypatch, capsys, "--suite", suite, "--baseline", make(tmp_path, suite))
    assert code == 2
    assert message in " ".join(err.split()) and "Traceback" not in err


def test_calibration_shift_refuses_unless_forced(monkeypatch, capsys, tmp_path):
    suite = write_suite(tmp_path / "tiny.toml")
    baseline = fake_baseline(tmp_path / "b.parquet", suite, scale=1e-3)  # a machine 1000x faster
    # recorded here, so only the calibration mode refuses (a baseline from another machine always would)
    code, _, err = run_cli(monkeypatch, capsys, "--suite", suite, "--baseline", baseline, "--normalize", "calibration")
    assert code == 2 and "calibration moved too much" in " ".join(err.split()) and "--force" in err


@pytest.mark.parametrize(("args", "message"), [
    ([], "exactly one of --baseline"),
    (["--baseline", "b.parquet", "--against", "HEAD"], "exactly one of --baseline"),
    (["--against", "HEAD", "--rounds", "3"], "cannot reach p < 0.01"),
    (["--baseline", "b.parquet", "--rounds", "2"], "--rounds must be >= 3"),
    (["--baseline", "b.parquet", "--threshold", "0"], "--threshold must be in"),
    (["--baseline", "b.parquet", "--normalize", "sometimes"], "unknown --normalize"),
    (["--against", "no-such-ref-xyz", "--rounds", "8"], "unknown git ref 'no-such-ref-xyz'"),
], ids=["neither", "both", "against-too-few-rounds", "rounds", "threshold", "normalize", "unknown-ref"])
def test_usage_errors_exit_2(args, message, monkeypatch, capsys, tmp_path):
    suite = write_suite(tmp_path / "tiny.toml")
    if "b.parquet" in args:
        fake_baseline(tmp_path / "b.parquet", suite)
        args = [str(tmp_path / a) if a == "b.parquet" else a for a in args]
    code, _, err = run_cli(monkeypatch, capsys, "--suite", suite, *args)
    assert code == 2 and message in " ".join(err.split())


def test_against_outside_git_exits_2(monkeypatch, capsys, tmp_path):
    suite = write_suite(tmp_path / "tiny.toml")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "--suite", suite, "--against", "HEAD", "--rounds", "8")
    assert code == 2 and "needs a git checkout" in err


@pytest.mark.slow  # tens of seconds of real measurement: `make test-slow` (CI runs it)
def test_against_ref_runs_the_refs_code_interleaved(tmp_path):
    """The ref's faulty model does 6x the work by default: the head (this checkout) must come out faster."""
    repo = tmp_path / "repo"
    shutil.copytree(Path(ssmbench.__file__).parent, repo / "ssmbench",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.o"))
    faulty = repo / "ssmbench" / "models" / "faulty.py"
    faulty.write_text(faulty.read_text().replace("work_factor: float = 1.0", "work_factor: float = 6.0"))

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                              capture_output=True, text=True).stdout

    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "slow faulty")
    plan = gate.plan_check(write_suite(tmp_path / "tiny.toml", rounds=7, transformer=False), threshold=0.5)
    result = run_against_ref(plan, "HEAD", repo=repo)
    (faulty,) = result.cases
    assert faulty.verdict in ("faster", "ok"), render_markdown(result)  # stopped once inside the threshold
    assert faulty.comparison.paired and faulty.comparison.ratio < 0.5
    assert result.exit_code == 0 and len(faulty.base) == len(faulty.head) == faulty.rounds < 14
    assert git("worktree", "list").count("\n") == 1  # the temporary worktree is gone


def test_check_compile_replaces_the_suites_compile_setting():
    root = Path(ssmbench.__file__).resolve().parents[1]
    eager = gate.plan_check(root / "tasks" / "ci.toml")
    both = gate.plan_check(root / "tasks" / "ci.toml", compile_modes=("eager", "compiled"))
    assert {c.compile for c in eager.cases} == {"eager"}
    assert len(both.cases) == 2 * len(eager.cases)
    assert [c for c in both.cases if c.compile == "eager"] == list(eager.cases)
    assert {replace(c, compile="eager") for c in both.cases if c.compile == "compiled"} == set(eager.cases)
