"""The crossover search on synthetic timing functions with known crossings and noise (no real timing here)."""

import math

import numpy as np
import pytest

from ssmbench.search.crossover import ProbeFailed, SearchSettings, search_crossover

GRID = [2**k for k in range(6, 15)]  # 64 .. 16k


class Synthetic:
    """time_A(L), time_B(L) with multiplicative noise; a fake clock advanced by the simulated measuring cost.

    ``load`` adds a per-round slowdown that hits A and B of the same round alike (a shared machine's bursts).
    """

    def __init__(self, t_a, t_b, noise=0.03, load=0.0, seed=0, cost_s=1.0, fail_from=None):
        self.t_a, self.t_b, self.noise, self.load = t_a, t_b, noise, load
        self.rng = np.random.default_rng(seed)
        self.now, self.cost_s, self.fail_from = 0.0, cost_s, fail_from
        self.calls: list[tuple[int, int]] = []

    def clock(self) -> float:
        return self.now

    def __call__(self, length: int, rounds: int):
        self.calls.append((length, rounds))
        if self.fail_from is not None and length >= self.fail_from:
            raise ProbeFailed(f"B: oom at L={length}")
        self.now += self.cost_s * rounds
        a, b = [], []
        for _ in range(rounds):
            burst = 1 + self.load * self.rng.exponential()
            a.append(self.t_a(length) * burst * math.exp(self.rng.normal(0, self.noise)))
            b.append(self.t_b(length) * burst * math.exp(self.rng.normal(0, self.noise)))
        return a, b


def linear_vs_quadratic(l_star):
    """A ~ L (an SSM), B ~ L^2 / L* (attention): B faster below L*, A faster above."""
    return (lambda n: 1e-6 * n), (lambda n: 1e-6 * n * n / l_star)


@pytest.mark.parametrize("l_star", [100, 700, 1000, 3000, 6000])
@pytest.mark.parametrize("seed", range(4))
def test_finds_a_known_crossover_within_the_target_width(l_star, seed):
    fake = Synthetic(*linear_vs_quadratic(l_star), noise=0.01, load=0.3, seed=seed)
    r = search_crossover(fake, GRID, SearchSettings(rel_width=0.15, budget_s=1e9), clock=fake.clock)
    assert r.answer == "crosses" and r.faster_above == "A"
    lo, hi = r.interval
    assert lo <= l_star <= hi and (hi / lo - 1 <= 0.15 or (r.stopped_by == "ties" and hi / lo - 1 <= 0.2))
    assert lo <= r.crossover_len <= hi
    assert abs(math.log(r.crossover_len / l_star)) < 0.1


@pytest.mark.parametrize("l_star", [100, 700, 1000, 3000, 6000])
@pytest.mark.parametrize("seed", range(4))
def test_noise_widens_the_interval_but_it_still_holds_the_crossing(l_star, seed):
    """5% noise per sample: lengths within a few % of L* are ties, so the interval may end a little wider than
    the target (stopped_by 'ties'), but it must contain L*."""
    fake = Synthetic(*linear_vs_quadratic(l_star), noise=0.05, load=0.3, seed=seed)
    r = search_crossover(fake, GRID, SearchSettings(rel_width=0.15, budget_s=1e9), clock=fake.clock)
    lo, hi = r.interval
    assert r.answer == "crosses" and lo <= l_star <= hi
    assert hi / lo - 1 <= 0.15 or (r.stopped_by == "ties" and hi / lo - 1 <= 0.35)


def test_the_other_direction_and_a_sub_power_crossing():
    t_a, t_b = linear_vs_quadratic(1500)
    fake = Synthetic(t_b, t_a, noise=0.02)
    r = search_crossover(fake, GRID, clock=fake.clock)
    assert r.faster_above == "B" and r.interval[0] <= 1500 <= r.interval[1]
    assert all(length in GRID or length % 16 == 0 for length in (p.length for p in r.probes))


def test_never_crosses_names_the_faster_side():
    fake = Synthetic(lambda n: 2e-6 * n, lambda n: 1e-6 * n)
    r = search_crossover(fake, GRID, clock=fake.clock)
    assert r.answer == "never_crosses" and r.faster_above == "B" and r.interval is None
    assert r.stopped_by == "range" and [p.length for p in r.probes] == GRID
    assert all(p.rounds == 7 for p in r.probes)  # a clear difference is decided with the fewest rounds


def test_crosses_more_than_once():
    # A is faster only between 300 and 700: bracket [256, 512], and B wins again at 1024
    fake = Synthetic(lambda n: 1e-6 * n * (0.8 if 300 <= n <= 700 else 1.25), lambda n: 1e-6 * n, noise=0.02)
    r = search_crossover(fake, GRID, clock=fake.clock)
    assert r.answer == "crosses_more_than_once" and r.interval[0] <= 300 <= r.interval[1]
    assert "L=1024" in r.note
    assert r.to_dict({"A": "mamba", "B": "transformer"})["note"] == "transformer is faster again at L=1024"


def test_identical_models_are_indistinguishable_not_a_crossing():
    fake = Synthetic(lambda n: 1e-6 * n, lambda n: 1e-6 * n, noise=0.05)
    r = search_crossover(fake, GRID, SearchSettings(max_rounds=11), clock=fake.clock)
    assert r.answer in ("indistinguishable", "never_crosses")
    if r.answer == "indistinguishable":
        assert r.faster_above is None and all(p.faster is None for p in r.probes)


def test_tied_stretch_stays_inside_the_interval():
    # equal costs on [800, 1200]: B faster below, A above; the answer's interval must cover the whole tie
    def t_a(n):
        return 1e-6 * n * (1.3 if n < 800 else 1.0 if n <= 1200 else 0.7)

    fake = Synthetic(t_a, lambda n: 1e-6 * n, noise=0.02)
    r = search_crossover(fake, GRID, clock=fake.clock)
    assert r.answer == "crosses" and r.interval[0] < 800 and r.interval[1] > 1200
    assert r.stopped_by == "ties" and "within noise" in r.note
    assert any(p.faster is None for p in r.probes)


def test_budget_stops_the_search_with_a_wider_but_true_interval():
    fake = Synthetic(*linear_vs_quadratic(3000), noise=0.02, cost_s=2.0)
    r = search_crossover(fake, GRID, SearchSettings(budget_s=120), clock=fake.clock)
    assert r.stopped_by == "budget" and r.interval[0] <= 3000 <= r.interval[1]
    assert r.interval[1] / r.interval[0] - 1 > 0.15
    assert r.seconds <= 120 + 2.0 * 15  # the probe in flight when the budget ran out finishes


def test_a_failed_probe_ends_the_search_with_what_is_known():
    fake = Synthetic(lambda n: 2e-6 * n, lambda n: 1e-6 * n, fail_from=4096)
    r = search_crossover(fake, GRID, clock=fake.clock)
    assert r.answer == "never_crosses" and r.stopped_by == "failure" and "L=4096" in r.note
    fake = Synthetic(lambda n: 2e-6 * n, lambda n: 1e-6 * n, fail_from=1)
    assert search_crossover(fake, GRID, clock=fake.clock).answer == "failed"


def test_noisy_probe_gets_more_rounds_up_to_the_cap():
    fake = Synthetic(lambda n: 1.02e-6 * n, lambda n: 1e-6 * n, noise=0.2, seed=3)
    r = search_crossover(fake, GRID[:2], SearchSettings(max_rounds=15), clock=fake.clock)
    assert max(p.rounds for p in r.probes) == 15 and [n for _, n in fake.calls][:3] == [7, 4, 4]


def test_json_names_the_models():
    fake = Synthetic(*linear_vs_quadratic(1000), noise=0.02)
    d = search_crossover(fake, GRID, clock=fake.clock).to_dict({"A": "mamba", "B": "transformer"})
    assert d["faster_above"] == "mamba" and len(d["interval"]) == 2
    assert {p["faster"] for p in d["probes"]} <= {"mamba", "transformer", None}
    assert all(len(p["ci"]) == 2 and p["rounds"] >= 3 for p in d["probes"])


def test_a_second_swap_several_lengths_above_the_first_bracket_is_found():
    # A faster from ~150 to ~1k, B faster again from ~1k to ~1.6k, A faster beyond: checking only the next power of
    # two above the first bracket (256) called this a single crossing at ~150
    def ratio(n):
        return 0.9 if 150 < n < 900 or n > 1700 else 1.1

    fake = Synthetic(lambda n: 1e-6 * n * ratio(n), lambda n: 1e-6 * n, noise=0.01, seed=1)
    r = search_crossover(fake, GRID, SearchSettings(rel_width=0.15, budget_s=1e9), clock=fake.clock)
    assert r.answer == "crosses_more_than_once" and r.interval[0] <= 150 <= r.interval[1]


def test_lengths_left_unchecked_above_the_bracket_are_named():
    fake = Synthetic(*linear_vs_quadratic(100), noise=0.01, seed=0, cost_s=1.0)
    r = search_crossover(fake, GRID, SearchSettings(rel_width=0.15, budget_s=60), clock=fake.clock)
    assert r.answer == "crosses" and "another swap there is not excluded" in r.note
