"""Copying / n-gram lookup generator (Jelassi format): rows parsed and rebuilt in plain Python, ranges, seeding,
fit checks and validation."""

from __future__ import annotations

import pytest
import torch

from ssmbench.synthetic.copying import TASK, make_batch


def count(s: list[int], g: list[int]) -> int:
    return sum(s[i:i + len(g)] == g for i in range(len(s) - len(g) + 1))


def check_rows(inputs: torch.Tensor, labels: torch.Tensor, V: int, lo: int, hi: int, variant: str, k: int,
               answer_len: int | None) -> list[int]:
    """Parse each row, rebuild the expected example and its labels, compare. Returns the string lengths."""
    BOS, SEP, EOS, PAD = V, V + 1, V + 2, V + 3
    L = inputs.shape[1]
    lengths = []
    for x, y in zip(inputs.tolist(), labels.tolist(), strict=True):
        assert x[0] == BOS
        first = x.index(SEP)
        if variant == "copy":
            s = x[1:first]
            answer = s if answer_len is None else s[:answer_len]
            full = [BOS, *s, SEP, *answer, EOS]
        elif variant == "prefix_ngram":
            g = x[1:first]
            assert len(g) == k
            second = x.index(SEP, first + 1)
            s = x[first + 1:second]
        else:
            s = x[1:first]
            g = x[first + 1:first + 1 + k]
        if variant != "copy":
            assert count(s, g) == 1  # the key occurs exactly once in s
            i = next(i for i in range(len(s)) if s[i:i + k] == g)
            rest = s[i + k:]
            answer = rest if answer_len is None else rest[:answer_len]
            assert len(answer) == (answer_len or len(rest)) >= 1
            full = ([BOS, *g, SEP, *s, SEP, *answer, EOS] if variant == "prefix_ngram"
                    else [BOS, *s, SEP, *g, *answer, EOS])
        assert lo <= len(s) <= hi and all(0 <= c < V for c in s)
        lengths.append(len(s))
        assert len(full) <= L + 1  # the final '.' may be label-only
        full += [PAD] * (L + 1 - len(full))
        assert x == full[:L]
        a0 = len(full) - full[::-1].index(EOS) - 1 - len(answer)  # first answer token in `full`
        expected = [full[t + 1] if a0 <= t + 1 <= a0 + len(answer) else -100 for t in range(L)]
        assert y == expected
    return lengths


CASES = [
    (3, 45, 26, 5, 20, "copy", 3, None), (5, 12, 26, 4, 4, "copy", 3, None), (4, 30, 5, 3, 9, "copy", 3, 2),
    (6, 61, 26, 5, 25, "prefix_ngram", 3, None), (6, 61, 26, 5, 27, "suffix_ngram", 3, None),
    (8, 40, 4, 6, 14, "prefix_ngram", 2, 3), (8, 40, 4, 6, 15, "suffix_ngram", 2, 1),
    (7, 33, 3, 8, 14, "suffix_ngram", 3, None), (2, 1001, 26, 100, 400, "prefix_ngram", 4, None),
]


@pytest.mark.parametrize("n,L,V,lo,hi,variant,k,a", CASES, ids=lambda v: str(v))
def test_format_matches_python_rederivation(n, L, V, lo, hi, variant, k, a):
    x, y = make_batch(n, L, vocab_size=V, min_len=lo, max_len=hi, variant=variant, ngram=k, answer_len=a, seed=0)
    assert x.shape == y.shape == (n, L) and x.dtype == y.dtype == torch.long
    check_rows(x, y, V, lo, hi, variant, k, a)


@pytest.mark.parametrize("variant", ["copy", "prefix_ngram", "suffix_ngram"])
def test_longest_string_fits_exactly(variant):
    # max_len=None picks the longest string that fits; the longest example then fills the row but for its '.'.
    p = TASK.params(50, variant=variant)
    hi = p["max_len"]
    x, y = make_batch(64, 50, **{**p, "min_len": hi}, seed=1)
    check_rows(x, y, 26, hi, hi, variant, 3, None)
    if variant == "copy":
        assert hi == 24 and (x != 29).all() and (y[:, -1] == 28).all()
    with pytest.raises(ValueError, match="needs seq_len"):
        make_batch(2, 50, **{**p, "min_len": hi + 1, "max_len": hi + 1})


def test_lengths_cover_the_range_and_pad_is_never_a_target():
    x, y = make_batch(300, 45, vocab_size=26, min_len=5, max_len=20, seed=3)
    lengths = check_rows(x, y, 26, 5, 20, "copy", 3, None)
    assert set(lengths) == set(range(5, 21))
    assert not (y == 29).any() and (x == 29).any()


def test_seed_determinism():
    for variant in ("copy", "suffix_ngram"):
        a = make_batch(4, 45, vocab_size=26, variant=variant, seed=9)
        b = make_batch(4, 45, vocab_size=26, variant=variant, generator=torch.Generator().manual_seed(9))
        c = make_batch(4, 45, vocab_size=26, variant=variant, seed=10)
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
        assert not torch.equal(a[0], c[0])


def test_task_defaults_and_chance():
    p = TASK.params(42)
    assert (p["min_len"], p["max_len"]) == (5, 20)  # docs/tasks.md: train strings U[5, 20]
    assert TASK.vocab_size(p) == 30 and TASK.chance(p) == pytest.approx(1 / 26)
    x, y = TASK.make_batch(3, 42, seed=0)
    check_rows(x, y, 26, 5, 20, "copy", 3, None)
    assert TASK.params(TASK.paper_train_length, **TASK.paper)["max_len"] == 50


@pytest.mark.parametrize("L,kw,match", [
    (40, {"variant": "reverse"}, "variant"),
    (40, {"max_len": 20}, "needs seq_len >= 42"),
    (10, {}, "too short"),
    (40, {"min_len": 10, "max_len": 9}, "max_len must be >= 10"),
    (40, {"variant": "prefix_ngram", "ngram": 5, "min_len": 5}, "min_len must be >= 6"),
    (40, {"variant": "copy", "answer_len": 6, "min_len": 5}, "min_len must be >= 6"),
    (40, {"vocab_size": 1}, "vocab_size"),
    (80, {"variant": "suffix_ngram", "ngram": 20, "min_len": 21}, "overflows"),
    (40, {"ngram": 0}, "ngram"),
], ids=["variant", "no-fit", "tiny-L", "max<min", "ngram-vs-min", "answer-vs-min", "vocab1", "hash", "ngram0"])
def test_bad_params(L, kw, match):
    with pytest.raises(ValueError, match=match):
        make_batch(2, L, **{"vocab_size": 26, **kw})


def test_no_unique_ngram_is_a_clear_error():
    # Over 2 symbols, a 1-gram is unique only if a symbol occurs once: hopeless in 40-char strings.
    with pytest.raises(ValueError, match="occurring exactly once"):
        make_batch(4, 90, vocab_size=2, variant="suffix_ngram", ngram=1, min_len=40, max_len=40, seed=0)
