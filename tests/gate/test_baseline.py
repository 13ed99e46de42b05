"""The stored baseline stays valid when Case grows: the committed CI baseline still judges tasks/ci.toml."""

from dataclasses import replace
from pathlib import Path

import ssmbench
from ssmbench.case import _ID_IF_SET
from ssmbench.gate import run as gate
from ssmbench.gate.baseline import case_key, check_compatible, read_baseline

REPO = Path(ssmbench.__file__).resolve().parent.parent


def test_committed_baseline_covers_the_ci_suite():
    plan = gate.plan_check(REPO / "tasks" / "ci.toml")
    baseline = read_baseline(REPO / "results" / "baselines" / "ci.parquet")
    check_compatible(baseline, suite=plan.suite.name, suite_path=plan.suite.path, cases=plan.cases)  # no SpecError


def test_fields_added_later_leave_the_key_alone_at_their_defaults(tiny_case):
    case = tiny_case()
    assert _ID_IF_SET  # e.g. search, max_memory
    for name, default in _ID_IF_SET.items():
        assert getattr(case, name) == default
        changed = replace(case, **{name: "x" if isinstance(default, str) else 1})
        assert case_key(changed) != case_key(case)
