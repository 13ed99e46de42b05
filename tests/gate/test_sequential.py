"""The sequential A/B design: alpha/beta spending over looks, the t bound, stopping decisions, error rates."""

import math

import numpy as np
import pytest

from ssmbench.gate.sequential import STEP, Look, decide, first_decision, plan_looks, upper_bound
from ssmbench.gate.stats import wilcoxon_signed_rank


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
    """alpha 0.01 per case, up to 20 rounds: a regression can be called at round 8 (and 20), a clean case can stop
    from round 6."""
    looks = plan_looks(20, 0.01)
    assert first_decision(looks) == (8, 6)
    assert [lk.rounds for lk in looks if lk.alpha] == [8, 20]
    assert first_decision(plan_looks(4, 0.01)) == (None, 4)  # 2^-4 > 0.01: no regression call possible
    settled = plan_looks(20, 0.01, settle_at=10)  # the CI suite: --rounds 10
    assert [lk.rounds for lk in settled if lk.alpha] == [8, 10, 20]
    assert [lk.rounds for lk in settled if lk.settle] == [10]
    assert [lk.rounds for lk in settled if lk.beta] == [6, 8]
    assert [lk.alpha for lk in settled if lk.alpha] == pytest.approx([0.004, 0.001, 0.005])
    assert sum(lk.beta for lk in settled) == pytest.approx(0.1)


@pytest.mark.parametrize(("n", "level"), [(6, 0.05), (8, 0.0071), (10, 0.05), (13, 0.01)])
def test_upper_bound_inverts_the_signed_rank_test(n, level):
    """Just above the bound the one-sided signed-rank test of "center < theta" rejects at ``level``; just below it
    does not (the bound is the edge of the test's acceptance region)."""
    d = np.random.default_rng(n).standard_normal(n) * 0.05
    u = math.log(upper_bound(np.exp(d), level))
    assert wilcoxon_signed_rank(d - (u + 1e-9), exact=True)[2] <= level
    assert wilcoxon_signed_rank(d - (u - 1e-9), exact=True)[2] > level
    assert upper_bound(np.exp(d[:4]), level) == math.inf  # 2^-4 > level: no bound that sure


@pytest.mark.parametrize("n", [6, 10])
def test_upper_bound_covers_the_center(n):
    """Symmetric heavy-tailed log ratios (t, 3 df): the bound falls below the center no more often than its level."""
    rng = np.random.default_rng(1)
    level, trials = 0.05, 3000
    misses = sum(upper_bound(np.exp(0.05 * rng.standard_t(3, n)), level) < 1.0 for _ in range(trials))
    assert misses / trials <= level + 0.01


def test_upper_bound_shrugs_off_one_burst():
    steady = np.exp(0.02 * np.random.default_rng(0).standard_normal(10))
    burst = steady.copy()
    burst[3] *= 1.6  # one round where the head side was hit by load
    assert upper_bound(burst, 0.05) < 1.05


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
    # the settling look (the fixed design's length): not beyond the threshold -> stop; beyond it -> go on
    settle = Look(12, 1e-3, 0.0, settle=True)
    assert decide(base, noisy, settle, 0.10, last=False)[0] == "ok"
    assert decide(base, noisy * 1.05, settle, 0.10, last=False)[0] is None


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
    """Unchanged: never flagged, most cases stop early. 1.3x: all flagged."""
    verdicts, used = simulate(1.0, 40, 0.01, noise, seed=2)
    assert "regression" not in verdicts
    if noise == 0.02:
        assert np.mean(used) <= 8  # a steady machine: clean cases stop at the first look or the next
    verdicts, used = simulate(1.3, 20, 0.01, noise, seed=3)
    assert verdicts.count("regression") == 20 and set(used) <= {8, 20}  # the two looks that spend alpha
