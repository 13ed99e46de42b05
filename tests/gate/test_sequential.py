"""The sequential A/B design: alpha/beta spending over looks, the sign-test bound, stopping decisions, error rates."""

import math

import numpy as np
import pytest

from ssmbench.gate.sequential import STEP, Look, decide, first_decision, plan_looks, upper_bound


def test_spending_never_exceeds_the_budget_and_every_share_is_reachable():
    for max_rounds in (6, 10, 16, 20, 40):
        for alpha_case in (0.01, 0.01 / 20, 0.05):
            looks = plan_looks(max_rounds, alpha_case)
            assert [lk.rounds for lk in looks] == [*range(STEP, max_rounds, STEP), max_rounds]
            assert sum(lk.alpha for lk in looks) <= alpha_case * (1 + 1e-12)
            assert sum(lk.beta for lk in looks) <= 0.10 * (1 + 1e-12)
            # a share the signed-rank / sign test cannot reach (2^-n > level) would be spent for nothing
            assert all(lk.alpha == 0 or 2.0 ** -lk.rounds <= lk.alpha for lk in looks)
            assert all(lk.beta == 0 or 2.0 ** -lk.rounds <= lk.beta for lk in looks)


def test_first_decisions_of_the_ci_suite():
    """20 cases, alpha 0.01 over the suite, up to 20 rounds: a regression can be called from round 12, a clean
    case can stop from round 6."""
    assert first_decision(plan_looks(20, 0.01 / 20)) == (12, 6)
    assert first_decision(plan_looks(4, 0.01)) == (None, 4)  # 2^-4 > 0.01: no regression call possible


def test_upper_bound_is_the_sign_test_order_statistic():
    r = [1.0, 1.01, 1.02, 1.03, 1.04, 1.05]
    assert upper_bound(r, 2.0**-6) == 1.05  # all six below the median: probability 1/64
    assert upper_bound(r, 2.0**-6 * 0.99) == math.inf  # no bound that sure from six rounds
    n = 10  # P(Bin(10, 1/2) <= 1) = 11/1024: the second largest
    assert upper_bound(list(range(n)), 11 / 1024) == 8 and upper_bound(list(range(n)), 10 / 1024) == 9


def test_upper_bound_covers_the_true_median():
    """Skewed noise (load only adds time): the bound falls below the true median no more often than its level."""
    rng = np.random.default_rng(1)
    n, level, trials = 10, 0.05, 4000
    true_median = 1.0 + np.log(2) * 0.1  # median of 1 + Exponential(scale 0.1)
    misses = sum(upper_bound(1.0 + rng.exponential(0.1, n), level) < true_median for _ in range(trials))
    assert misses / trials <= level + 0.01


def test_decide_stops_clear_cases_and_waits_on_doubtful_ones():
    rng = np.random.default_rng(0)
    base = 1e-2 * (1 + 0.01 * rng.standard_normal(12))
    look6, look12 = Look(6, 0.0, 0.05), Look(12, 1e-3, 0.01)
    # unchanged and steady: inside the threshold at the first futility look
    v, c = decide(base[:6], base[:6] * (1 + 0.01 * rng.standard_normal(6)), look6, 0.10, last=False)
    assert v == "ok" and c.paired
    # 30% slower: no regression decision possible at look 6 (alpha 0 there), called at 12
    assert decide(base[:6], base[:6] * 1.3, look6, 0.10, last=False)[0] is None
    assert decide(base, base * 1.3 * (1 + 0.01 * rng.standard_normal(12)), look12, 0.10, last=False)[0] == "regression"
    # rounds split between 0.9x and 1.3x (median 1.1): neither inside nor beyond; at the last look: the verdict
    noisy = base * np.array([0.9, 1.3] * 6)
    assert decide(base, noisy, look12, 0.10, last=False)[0] is None
    assert decide(base, noisy, look12, 0.10, last=True)[0] == "ok"
    assert decide(base, noisy * 1.05, look12, 0.10, last=True)[0] == "unsure"


def simulate(ratio: float, cases: int, alpha_case: float, noise: float, seed: int) -> tuple[list[str], list[int]]:
    """Run the sequential procedure on synthetic paired rounds; (verdicts, rounds used)."""
    rng = np.random.default_rng(seed)
    looks = plan_looks(20, alpha_case)
    verdicts, used = [], []
    for _ in range(cases):
        base = 1e-2 * (1 + rng.exponential(noise, 20))
        head = 1e-2 * ratio * (1 + rng.exponential(noise, 20))
        for lk in looks:
            v, _ = decide(base[:lk.rounds], head[:lk.rounds], lk, 0.10, last=lk is looks[-1])
            if v is not None:
                verdicts.append(v)
                used.append(lk.rounds)
                break
    return verdicts, used


@pytest.mark.parametrize("noise", [0.02, 0.1])
def test_error_rates_and_savings(noise):
    """Unchanged: never flagged, most cases stop early. 1.3x: all flagged. alpha is that of a 20-case suite."""
    verdicts, used = simulate(1.0, 40, 0.01 / 20, noise, seed=2)
    assert "regression" not in verdicts
    if noise == 0.02:
        assert np.mean(used) <= 8  # a steady machine: clean cases stop at the first look or the next
    verdicts, used = simulate(1.3, 20, 0.01 / 20, noise, seed=3)
    assert verdicts.count("regression") == 20 and np.mean(used) <= 14
