"""A slowdown in code every model shares: `--against` catches it, the baseline mode passes it with its warning.

A temporary git repository holds a copy of the package: commit 1 as it is, commit 2 with `SequenceModel.forward`
running the layer stack twice (every family slows alike, ~2x at these sizes: large enough to be unmistakable on a
shared test machine). The head side's workers import the repository's checkout (PYTHONPATH; the test runs from
another directory so that `python -m` does not put this checkout first).
"""

import shutil
import subprocess
from pathlib import Path

import pytest

import ssmbench
from ssmbench.gate import run as gate
from ssmbench.gate.ab import run_against_ref
from ssmbench.gate.summary import render_markdown

FORWARD = "        return self.head(self.hidden(tokens))\n"
SLOWED = "        self.hidden(tokens)  # test: extra work in code every model shares\n" + FORWARD
SUITE = """
[suite]
name = "shared"
rounds = 6

[[sweep]]
models = "transformer,s4"
lengths = "64"
tokens = 512
d_model = 32
n_layers = 2
vocab_size = 32
samples = 3
budget_s = 0
warmup = 1
threads = 1
timeout_s = 120
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """(repository whose HEAD slows shared code and HEAD~1 does not, the suite)."""
    d = tmp_path_factory.mktemp("shared")
    repo = d / "repo"
    shutil.copytree(Path(ssmbench.__file__).parent, repo / "ssmbench",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.o"))

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                       capture_output=True)

    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "base")
    blocks = repo / "ssmbench" / "models" / "blocks.py"
    assert FORWARD in blocks.read_text()
    blocks.write_text(blocks.read_text().replace(FORWARD, SLOWED))
    git("commit", "-q", "-am", "slow shared code")
    (d / "shared.toml").write_text(SUITE)
    return repo, d / "shared.toml", git


@pytest.fixture()
def head_from(repo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(repo[0]))


@pytest.mark.slow  # tens of seconds of real measurement: `make test-slow` (CI runs it)
def test_against_catches_a_uniform_slowdown_and_passes_the_unchanged_tree(repo, head_from):
    path, suite, _ = repo
    plan = gate.plan_check(suite, threshold=0.2, alpha=0.05)
    slow = run_against_ref(plan, "HEAD~1", repo=path)
    assert [c.verdict for c in slow.cases] == ["regression"] * 2, render_markdown(slow)
    assert slow.exit_code == 1 and slow.geomean_ratio > 1.3
    same = run_against_ref(plan, "HEAD", repo=path)
    assert same.exit_code == 0 and not any(c.verdict == "unsure" for c in same.cases), render_markdown(same)


@pytest.mark.slow  # tens of seconds of real measurement: `make test-slow` (CI runs it)
def test_baseline_mode_passes_it_with_the_warning(repo, head_from, tmp_path):
    _, suite, git = repo
    plan = gate.plan_check(suite, threshold=0.2)
    git("checkout", "-q", "HEAD~1")
    try:
        baseline, _, _ = gate.record_baseline(plan, tmp_path / "b.parquet")
        same = gate.run_against_baseline(plan, baseline)
    finally:
        git("checkout", "-q", "-")
    slow = gate.run_against_baseline(plan, baseline)
    for result in (same, slow):
        assert result.exit_code == 0 and gate.BLIND_SPOT in result.notes, render_markdown(result)
        assert "blind spot" in render_markdown(result)
    # the uniform slowdown shows only as a warning against the calibration
    assert slow.normalisation.suite_ratio > 1.3
    assert any("slower than the calibration predicts" in n for n in slow.notes), slow.notes


def test_a_flag_needs_the_confirmation_pass(repo, monkeypatch):
    """The first pass flags both cases; the confirmation (fresh workers, its own rounds) clears one of them."""
    from ssmbench.gate import ab
    from ssmbench.gate.baseline import case_key

    path, suite, _ = repo
    plan = gate.plan_check(suite)
    calls = []

    def fake(plan_, cases, sides, looks, on_progress):
        calls.append([case_key(c) for c in cases])
        keys = [case_key(c) for c in cases]
        meas = gate.Measurements(values={(s.name, k): [1e-3] * 8 for s in sides for k in keys})
        verdicts = ["regression"] * len(keys) if len(calls) == 1 else ["ok", "regression"]
        return meas, {k: (v, None, 8) for k, v in zip(keys, verdicts, strict=True)}

    monkeypatch.setattr(ab, "_sequential", fake)
    result = run_against_ref(plan, "HEAD", repo=path)
    assert len(calls) == 2 and calls[1] == calls[0]  # both flagged cases measured again
    assert [(c.first_verdict, c.verdict) for c in result.cases] == [("regression", "ok"), ("regression", "regression")]
    assert result.exit_code == 1
    assert len(run_against_ref(plan, "HEAD", repo=path, remeasure=False).cases) == 2 and len(calls) == 3
