"""Selective copying generator (s4 layout): per-row Python re-derivation, ranges, seeding, validation."""

from __future__ import annotations

import pytest
import torch

from ssmbench.synthetic.selective_copying import TASK, make_batch


def check_rows(inputs: torch.Tensor, labels: torch.Tensor, A: int, M: int, variable: bool) -> None:
    L = inputs.shape[1]
    slots = L - M
    for x, y in zip(inputs.tolist(), labels.tolist(), strict=True):
        assert x[slots:] == [A - 1] * M  # markers
        data = [(t, tok) for t, tok in enumerate(x[:slots]) if tok != 0]
        assert len(data) == M  # data symbols are never 0, so the non-blank slots are exactly the data
        assert all(1 <= tok <= A - 2 for _, tok in data)
        if not variable:
            assert [t for t, _ in data] == list(range(M))
        assert y[:slots] == [-100] * slots
        assert y[slots:] == [tok for _, tok in data]  # the i-th marker predicts the i-th data token


@pytest.mark.parametrize("n,L,A,M,variable", [
    (3, 37, 10, 8, True), (5, 16, 10, 8, True), (2, 64, 16, 16, False), (4, 9, 3, 4, True), (1, 130, 7, 1, True),
], ids=lambda v: str(v))
def test_format_matches_python_rederivation(n, L, A, M, variable):
    x, y = make_batch(n, L, vocab_size=A, num_tokens=M, variable=variable, seed=0)
    assert x.shape == y.shape == (n, L) and x.dtype == y.dtype == torch.long
    check_rows(x, y, A, M, variable)


def test_positions_are_spread_and_variable():
    x, _ = make_batch(200, 64, vocab_size=10, num_tokens=8, seed=4)
    slots = x[:, :56] != 0
    assert slots.any(dim=0).all()  # every slot before the markers is used by some row
    assert not (slots[:, :8]).all(dim=1).all()  # not the classic layout
    first = slots.float().argmax(dim=1)
    assert first.unique().numel() > 5
    tokens = x[:, :56][slots]
    assert set(tokens.unique().tolist()) == set(range(1, 9))


def test_seed_determinism():
    a = make_batch(4, 40, vocab_size=10, seed=5)
    b = make_batch(4, 40, vocab_size=10, seed=5)
    c = make_batch(4, 40, vocab_size=10, seed=6)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_task_defaults_and_chance():
    p = TASK.params(128)
    assert p == {"vocab_size": 10, "num_tokens": 8, "variable": True}
    assert TASK.vocab_size(p) == 10 and TASK.chance(p) == pytest.approx(1 / 8)
    x, y = TASK.make_batch(2, 128, seed=1)
    check_rows(x, y, 10, 8, True)
    assert TASK.vocab_size(TASK.paper) == 16 and TASK.chance(TASK.paper) == pytest.approx(1 / 14)


@pytest.mark.parametrize("L,kw,match", [
    (15, {}, "seq_len"), (64, {"vocab_size": 2}, "vocab_size"), (64, {"num_tokens": 0}, "num_tokens"),
    (64, {"variable": "yes"}, "True or False"),
], ids=["short", "vocab2", "M0", "variable-str"])
def test_bad_params(L, kw, match):
    with pytest.raises(ValueError, match=match):
        make_batch(2, L, **{"vocab_size": 10, **kw})
