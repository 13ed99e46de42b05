"""What a ref's worker accepts: its Case fields read from source, payloads restricted to them, old refs end to end."""

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

import ssmbench
from ssmbench.gate import run as gate
from ssmbench.gate.ab import run_against_ref
from ssmbench.gate.worktree import IncompatibleCase, base_payload, case_fields, worker_module

REPO = Path(ssmbench.__file__).resolve().parent.parent
PRE_LAYOUT = "b679f66~1"  # the last commit before the package layout (ssmbench/worker.py, no engine/)


def test_case_fields_read_from_source(tmp_path):
    (tmp_path / "ssmbench").mkdir()
    assert case_fields(tmp_path) is None  # no case.py: payloads go unfiltered
    (tmp_path / "ssmbench" / "case.py").write_text(
        "from dataclasses import dataclass\n\n@dataclass(frozen=True)\nclass Case:\n    kind: str\n"
        "    model: str = 'x'\n    X_LIMIT = 3\n\n    def label(self) -> str:\n        return self.model\n")
    assert case_fields(tmp_path) == {"kind", "model"}  # annotated fields only, not constants or methods
    assert case_fields(REPO) >= {"kind", "model", "seq_len", "model_options", "timeout_s"}


def test_base_payload_drops_new_fields_at_their_defaults(tiny_case):
    case = tiny_case()
    full = base_payload(case, None)
    assert base_payload(case, frozenset(full)) == full
    older = frozenset(full) - {"seed", "options"}  # a ref whose Case predates these two fields
    sent = base_payload(case, older)
    assert set(sent) == older and sent["model"] == case.model
    with pytest.raises(IncompatibleCase, match="the base's Case has no field 'seed'"):
        base_payload(replace(case, seed=3), older)


def test_side_reports_cases_its_worker_cannot_take(tmp_path):
    """A case setting a field the base's Case lacks is not sent (measure_rounds reports it; the verdict: new)."""
    plan = gate.plan_check(_suite(tmp_path), rounds=3)
    full = frozenset(base_payload(plan.cases[0], None))
    base = gate.Side("base", case_fields=full - {"seed"}, options=(("work_factor", 1.0),))
    assert base.incompatibility(plan.cases[0]) is None  # seed is at its default
    assert "no field 'seed'" in gate.Side("base", case_fields=full - {"seed"}).incompatibility(
        replace(plan.cases[0], seed=1))


def _suite(d: Path) -> Path:
    path = d / "one.toml"
    path.write_text('[suite]\nname = "one"\nrounds = 4\n\n[[sweep]]\nmodels = "transformer"\nlengths = "64"\n'
                    "tokens = 256\nd_model = 32\nn_layers = 1\nvocab_size = 32\nsamples = 2\nbudget_s = 0\n"
                    "warmup = 1\nthreads = 1\ntimeout_s = 120\n")
    return path


@pytest.mark.slow  # tens of seconds of real measurement: `make test-slow` (CI runs it)
def test_against_a_ref_from_before_the_package_layout(tmp_path):
    """The pre-layout worker (ssmbench.worker) measures the base side of a case built by this code."""
    if subprocess.run(["git", "cat-file", "-e", f"{PRE_LAYOUT}^{{commit}}"], cwd=REPO,
                      capture_output=True).returncode != 0:
        pytest.skip(f"{PRE_LAYOUT} is not in this checkout's history (shallow clone)")
    plan = gate.plan_check(_suite(tmp_path), rounds=4, threshold=5.0, alpha=0.1)
    result = run_against_ref(plan, PRE_LAYOUT, repo=REPO)
    (case,) = result.cases
    assert case.verdict in ("ok", "faster", "unsure"), case.error
    assert case.base and len(case.base) == len(case.head) == case.rounds


def test_worker_module_of_both_layouts(tmp_path):
    assert worker_module(REPO) == "ssmbench.engine.worker"
    (tmp_path / "ssmbench").mkdir()
    (tmp_path / "ssmbench" / "worker.py").write_text("")
    assert worker_module(tmp_path) == "ssmbench.worker"
