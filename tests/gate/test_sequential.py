"""The sequential A/B design: alpha/beta spending over looks, the t bound, stopping decisions, error rates."""

import math

import numpy as np
import pytest

from ssmbench.gate.sequential import STEP, Look, decide, first_decision, plan_looks, t_cdf, t_quantile, upper_bound


def test_spending_never_exceeds_the_budget_and_every_alpha_share_is_reachable():
    for max_rounds in (6, 10, 16, 20, 40):
        for alpha_case in (0.01, 0.01 / 20, 0.05):
            looks = plan_looks(max_rounds, alpha_case)
            assert [lk.rounds for lk in looks] == [*range(STEP, max_rounds, STEP), max_rounds]
            assert sum(lk.alpha for lk in looks) <= alpha_case * (1 + 1e-12)
            assert sum(lk.beta for lk in looks) == pytest.approx(0.10)
            # a share the signed-rank test cannot reach (2^-n > level) would be spent for nothing
            assert all(lk.alpha == 0 or 2.0 ** -lk.rounds <= lk.alpha for lk in looks)


def test_first_decisions_of_the_ci_suite():
    """20 cases, alpha 0.01 over the suite, up to 20 rounds: a regression can be called at round 12 (and 20), a
    clean case can stop from round 6."""
    looks = plan_looks(20, 0.01 / 20)
    assert first_decision(looks) == (12, 6)
    assert [lk.rounds for lk in looks if lk.alpha] == [12, 20]
    assert first_decision(plan_looks(4, 0.01)) == (None, 4)  # 2^-4 > 0.01: no regression call possible


@pytest.mark.parametrize(("p", "df", "q"), [(0.95, 5, 2.015048), (0.99, 10, 2.763769), (0.975, 1, 12.706205),
                                            (0.9, 2, 1.885618), (0.999, 19, 3.579400), (0.05, 7, -1.894579)])
def test_t_quantiles_match_the_tables(p, df, q):
    assert t_quantile(p, df) == pytest.approx(q, abs=1e-5)
    assert t_cdf(q, df) == pytest.approx(p, abs=1e-6)


def test_upper_bound_is_the_t_bound_of_the_mean_log_ratio():
    r = np.exp([0.0, 0.02, -0.02, 0.01, -0.01, 0.0])
    sd = np.std(np.log(r), ddof=1)
    assert upper_bound(r, 0.05) == pytest.approx(np.exp(2.015048 * sd / np.sqrt(6)), rel=1e-6)
    assert upper_bound(r[:1], 0.05) == math.inf


@pytest.mark.parametrize("n", [6, 10])
def test_upper_bound_covers_the_typical_ratio(n):
    """Log ratios with heavier tails than normal (t, 5 df): the bound misses the center no more often than its
    level (the t bound is conservative for symmetric heavy tails)."""
    rng = np.random.default_rng(1)
    level, trials = 0.05, 4000
    misses = sum(upper_bound(np.exp(0.05 * rng.standard_t(5, n)), level) < 1.0 for _ in range(trials))
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
    assert verdicts.count("regression") == 20 and set(used) <= {12, 20}  # the two looks that spend alpha
