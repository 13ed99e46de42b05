"""MQAR generator: labels re-derived row by row in plain Python, token ranges, seeding, validation."""

from __future__ import annotations

import pytest
import torch

from ssmbench.synthetic import mqar
from ssmbench.synthetic.mqar import TASK, make_batch


def check_rows(inputs: torch.Tensor, labels: torch.Tensor, V: int, kv: int, passes: int, fillers: bool) -> None:
    """Slow per-row re-derivation of the Zoology format."""
    ctx = 2 * kv * passes
    for x, y in zip(inputs.tolist(), labels.tolist(), strict=True):
        pairs = x[: 2 * kv]
        keys, values = pairs[0::2], pairs[1::2]
        assert len(set(keys)) == kv and all(1 <= k < V // 2 for k in keys)
        assert len(set(values)) == kv and all(V // 2 <= v < V for v in values)
        assert x[:ctx] == pairs * passes
        mapping = dict(zip(keys, values, strict=True))
        assert all(lab == -100 for lab in y[:ctx])
        labelled = [t for t, lab in enumerate(y) if lab != -100]
        assert len(labelled) == kv
        assert sorted(x[t] for t in labelled) == sorted(keys)  # every key queried exactly once
        for t in labelled:
            assert (t - ctx) % 2 == 0 and t <= len(x) - 2
            assert y[t] == mapping[x[t]]
        assert all(0 <= tok < V for tok in x)
        if not fillers:  # without fillers the input alone determines the labels
            for t in range(ctx, len(x)):
                assert y[t] == (mapping[x[t]] if x[t] != 0 else -100)


@pytest.mark.parametrize("n,L,V,kv,passes,fillers", [
    (3, 16, 12, 2, 1, False), (5, 66, 40, 8, 1, True), (4, 64, 512, 16, 1, False), (2, 48, 30, 4, 2, True),
    (1, 130, 1000, 32, 1, True),
], ids=lambda v: str(v))
def test_format_matches_python_rederivation(n, L, V, kv, passes, fillers):
    x, y = make_batch(n, L, vocab_size=V, num_kv_pairs=kv, num_passes=passes, random_non_queries=fillers, seed=1)
    assert x.shape == y.shape == (n, L) and x.dtype == y.dtype == torch.long
    check_rows(x, y, V, kv, passes, fillers)


def test_hard_kv_quarter_fills_every_query_slot():
    # Mamba-2's kv = L/4: the query region has exactly kv even slots, so all of them are queries.
    x, y = make_batch(4, 64, vocab_size=64, tokens_per_kv=4, random_non_queries=False, seed=0)
    assert ((y[:, 32::2] != -100).all())
    check_rows(x, y, 64, 16, 1, False)


def test_fillers_only_replace_zeros():
    kw = dict(vocab_size=64, num_kv_pairs=4, seed=7)
    x0, y0 = make_batch(8, 64, random_non_queries=False, **kw)
    x1, y1 = make_batch(8, 64, random_non_queries=True, **kw)
    assert torch.equal(y0, y1)
    keep = x0 != 0
    assert torch.equal(x1[keep], x0[keep])
    assert (x1[~keep] != 0).float().mean() > 0.9  # fillers are uniform over [0, V)


def test_power_law_clusters_queries_after_context():
    kw = dict(vocab_size=512, num_kv_pairs=8, random_non_queries=False, seed=3)
    offset = {}
    for a in (0.01, 1.0):
        _, y = make_batch(256, 256, power_a=a, **kw)
        offset[a] = (y != -100).nonzero()[:, 1].float().mean().item() - 16
    # uniform gaps: mean offset ~ 2 * 120 / 2 = 120; the 1/g law pulls queries towards the context.
    assert 100 < offset[1.0] < 140
    assert offset[0.01] < 0.6 * offset[1.0]


def test_seed_determinism_and_generator():
    a = make_batch(4, 64, vocab_size=128, seed=11)
    b = make_batch(4, 64, vocab_size=128, seed=11)
    c = make_batch(4, 64, vocab_size=128, seed=12)
    d = make_batch(4, 64, vocab_size=128, generator=torch.Generator().manual_seed(11))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert all(torch.equal(u, v) for u, v in zip(a, d, strict=True))
    assert not torch.equal(a[0], c[0])


def test_task_defaults_and_chance():
    p = TASK.params(128)
    assert p["num_kv_pairs"] == 16 and p["vocab_size"] == 512
    assert TASK.vocab_size(p) == 512
    assert TASK.chance(p) == pytest.approx(1 / 16)
    x, y = TASK.make_batch(3, 128, seed=0)
    check_rows(x, y, 512, 16, 1, True)
    paper = TASK.params(1024, **TASK.paper)
    assert paper["num_kv_pairs"] == 256 and TASK.vocab_size(paper) == 8192
    with pytest.raises(ValueError, match="num_kv_pairs"):
        TASK.chance({"num_kv_pairs": None})


@pytest.mark.parametrize("L,kw,match", [
    (63, {}, "even"),
    (64, {"num_kv_pairs": 17}, "seq_len >= "),
    (64, {"num_kv_pairs": 8, "num_passes": 4}, "pass"),
    (64, {"vocab_size": 16, "num_kv_pairs": 8}, "vocab_size >= 18"),
    (64, {"power_a": 0.0}, "power_a"),
    (64, {"power_a": 1.5}, "power_a"),
    (64, {"num_kv_pairs": 0}, "num_kv_pairs"),
    (64, {"num_kv_pairs": 2.0}, "integer"),
    (64, {"random_non_queries": 1}, "True or False"),
    (4, {}, "no key-value pair"),
], ids=["odd-L", "too-many-kv", "passes", "small-vocab", "a0", "a>1", "kv0", "kv-float", "fill-int", "tiny-L"])
def test_bad_params(L, kw, match):
    with pytest.raises(ValueError, match=match):
        make_batch(2, L, **{"vocab_size": 512, **kw})


def test_bad_batch_and_seeding():
    with pytest.raises(ValueError, match="n \\(batch size\\)"):
        make_batch(0, 64, vocab_size=512)
    with pytest.raises(ValueError, match="either generator or seed"):
        make_batch(2, 64, vocab_size=512, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="unknown parameter"):
        TASK.params(64, num_kv=3)
    assert TASK.name == mqar.NAME
