"""Induction-heads generator (safari format): per-row Python re-derivation, ranges, seeding, validation."""

from __future__ import annotations

import pytest
import torch

from ssmbench.synthetic.induction_heads import TASK, make_batch


def check_rows(inputs: torch.Tensor, labels: torch.Tensor, V: int) -> list[int]:
    """Returns the trigger position p of each row."""
    trigger = V - 2
    L = inputs.shape[1]
    ps = []
    for x, y in zip(inputs.tolist(), labels.tolist(), strict=True):
        at = [t for t, tok in enumerate(x) if tok == trigger]
        assert len(at) == 2 and at[1] == L - 1 and at[0] <= L - 4
        p = at[0]
        assert all(0 <= tok <= V - 3 for t, tok in enumerate(x) if t not in at)  # the spare V-1 never occurs
        assert y[:-1] == [-100] * (L - 1)
        assert y[-1] == x[p + 1]
        ps.append(p)
    return ps


@pytest.mark.parametrize("n,L,V", [(3, 33, 16), (6, 4, 16), (2, 5, 3), (4, 257, 40)], ids=lambda v: str(v))
def test_format_matches_python_rederivation(n, L, V):
    x, y = make_batch(n, L, vocab_size=V, seed=0)
    assert x.shape == y.shape == (n, L) and x.dtype == y.dtype == torch.long
    check_rows(x, y, V)


def test_trigger_positions_cover_the_range():
    x, y = make_batch(400, 12, vocab_size=16, seed=2)
    ps = check_rows(x, y, 16)
    assert set(ps) == set(range(9))  # p uniform on 0 .. L-4
    assert set(y[:, -1].tolist()) == set(range(14))


def test_seed_determinism():
    a = make_batch(4, 64, vocab_size=16, seed=5)
    b = make_batch(4, 64, vocab_size=16, generator=torch.Generator().manual_seed(5))
    c = make_batch(4, 64, vocab_size=16, seed=6)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_task_defaults_and_chance():
    p = TASK.params(64)
    assert TASK.vocab_size(p) == 16 and TASK.chance(p) == pytest.approx(1 / 14)
    assert TASK.train_length == 64 and TASK.train_length in TASK.lengths
    x, y = TASK.make_batch(2, 1024, seed=0)
    check_rows(x, y, 16)


@pytest.mark.parametrize("L,V,match", [(3, 16, "seq_len"), (64, 2, "vocab_size"), (64, 16.0, "integer")],
                         ids=["short", "vocab2", "vocab-float"])
def test_bad_params(L, V, match):
    with pytest.raises(ValueError, match=match):
        make_batch(2, L, vocab_size=V)
