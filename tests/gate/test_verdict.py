"""The gate's verdict rule, one condition at a time, and its re-measurement path (no workers: measurements faked)."""

from __future__ import annotations

import pytest

from ssmbench.gate import run as gate
from ssmbench.gate.baseline import case_key
from ssmbench.gate.stats import Comparison, verdict

T, ALPHA = 0.10, 0.01


def cmp(ratio: float, lo: float, hi: float, p_slower: float = 1e-4, p_faster: float = 0.9999) -> Comparison:
    return Comparison(ratio, lo, hi, p_slower, p_faster, 10, 10, paired=False)


@pytest.mark.parametrize(("c", "expected"), [
    (cmp(1.30, 1.05, 1.60), "regression"),  # all three conditions hold
    (cmp(1.30, 1.00, 1.60), "unsure"),  # CI touches 1: not a regression however small p is
    (cmp(1.30, 0.95, 1.60), "unsure"),  # CI contains 1
    (cmp(1.30, 1.05, 1.60, p_slower=0.02), "unsure"),  # not significant at alpha
    (cmp(1.10, 1.05, 1.15), "ok"),  # significant, but exactly at the threshold: not beyond it
    (cmp(1.09, 1.05, 1.15), "ok"),  # significant but below the threshold
    (cmp(0.80, 0.70, 0.95, p_slower=0.9999, p_faster=1e-4), "faster"),
    (cmp(0.80, 0.70, 1.00, p_slower=0.9999, p_faster=1e-4), "ok"),  # faster only when the CI is below 1
    (cmp(0.80, 0.70, 0.95, p_slower=0.9, p_faster=0.02), "ok"),  # ... and significant
    (cmp(1 / 1.1, 0.85, 0.95, p_slower=0.9999, p_faster=1e-4), "ok"),  # exactly 1 / (1 + threshold)
])
def test_each_condition_of_the_verdict(c: Comparison, expected: str) -> None:
    assert verdict(c, T, ALPHA) == expected


def test_regression_needs_the_whole_interval_above_one_even_with_a_tiny_p() -> None:
    for lo in (0.5, 0.99, 1.0):
        assert verdict(cmp(2.0, lo, 3.0, p_slower=1e-12), T, ALPHA) == "unsure"
    assert verdict(cmp(2.0, 1.0 + 1e-9, 3.0, p_slower=1e-12), T, ALPHA) == "regression"


@pytest.fixture
def plan(tiny_case) -> gate.CheckPlan:
    cases = tuple(tiny_case(seq_len=n) for n in (8, 16, 32))
    return gate.CheckPlan(suite=None, cases=cases, rounds=5, threshold=T, alpha=ALPHA)


def fake_rounds(monkeypatch, head_times: dict[int, list[float]], errors: dict[int, str] | None = None) -> list:
    """measure_rounds returning the given per-round head times (by seq_len); records each call's cases/rounds."""
    calls = []

    def measure_rounds(cases, sides, rounds, on_progress=None, probe=None):
        calls.append(([c.seq_len for c in cases], rounds))
        out = gate.Measurements()
        for c in cases:
            if errors and c.seq_len in errors:
                out.errors[("head", case_key(c))] = errors[c.seq_len]
            else:
                out.values[("head", case_key(c))] = list(head_times[c.seq_len])
        return out

    monkeypatch.setattr(gate, "measure_rounds", measure_rounds)
    return calls


BASE = [1.00, 1.01, 0.99, 1.02, 0.98, 1.00, 1.01, 0.99, 1.02, 0.98]
SLOW = [1.50, 1.52, 1.48, 1.51, 1.49, 1.50, 1.53, 1.47, 1.51, 1.49]


def test_suspects_are_re_measured_with_twice_the_rounds_and_judged_on_fresh_samples(plan, monkeypatch) -> None:
    key = {c.seq_len: case_key(c) for c in plan.cases}
    base_of = {k: list(BASE) for k in key.values()}.get
    # first pass: L=8 looked slow (a burst of load), L=16 is really slow, L=32 is fine
    checks = [gate.CaseCheck(key[n], f"L={n}", base=list(BASE), head=list(h))
              for n, h in ((8, SLOW), (16, SLOW), (32, BASE))]
    for cc in checks:
        gate._judge(cc, False, plan)
    assert [c.verdict for c in checks] == ["regression", "regression", "ok"]
    calls = fake_rounds(monkeypatch, {8: BASE, 16: SLOW})
    gate._remeasure(plan, checks, [gate.Side("head")], False, base_of, None)
    assert calls == [([8, 16], 2 * plan.rounds)]  # only the suspects, twice the rounds
    assert [(c.first_verdict, c.verdict) for c in checks] == [("regression", "ok"), ("regression", "regression"),
                                                              (None, "ok")]
    assert checks[0].head == BASE and checks[1].head == SLOW  # judged on the fresh samples only
    assert checks[1].comparison.ratio == pytest.approx(1.50 / 1.00, rel=0.02)


def test_a_suspect_that_fails_when_re_measured_is_failed(plan, monkeypatch) -> None:
    key = case_key(plan.cases[0])
    cc = gate.CaseCheck(key, "L=8", base=list(BASE), head=list(SLOW))
    gate._judge(cc, False, plan)
    fake_rounds(monkeypatch, {}, errors={8: "error: boom"})
    gate._remeasure(plan, [cc], [gate.Side("head")], False, lambda k: list(BASE), None)
    assert (cc.first_verdict, cc.verdict, cc.error) == ("regression", "failed", "error: boom")


def test_nothing_suspect_means_no_re_measurement(plan, monkeypatch) -> None:
    calls = fake_rounds(monkeypatch, {})
    checks = [gate.CaseCheck(case_key(c), "", base=list(BASE), head=list(BASE)) for c in plan.cases]
    for cc in checks:
        gate._judge(cc, False, plan)
    gate._remeasure(plan, checks, [gate.Side("head")], False, lambda k: list(BASE), None)
    assert calls == [] and {c.verdict for c in checks} == {"ok"}
