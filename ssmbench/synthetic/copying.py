"""String copying and n-gram lookup (Jelassi et al. 2024, "Repeat After Me", arXiv 2402.01032), in the format of
``sjelassi/transformers_ssm_copy`` ``synthetic_exps/data_utils.py``.

Alphabet ids ``0 .. V-1`` (``V = vocab_size``, the paper's 26 letters), then specials ``BOS = V`` ("$"),
``SEP = V+1`` ("|"), ``EOS = V+2`` ("."), ``PAD = V+3`` ("*"); the model's vocabulary is ``V + 4``.
Each row holds ONE example, right-padded with PAD (ssmbench does this for training too, where the paper packs
several examples per row); strings ``s`` are i.i.d. uniform with length ``l ~ U[min_len, max_len]``:

- ``variant="copy"``:          ``$ s | a .``      with ``a = s`` (or its first ``answer_len`` chars);
- ``variant="prefix_ngram"``:  ``$ g | s | a .``  (key first; GSSMs length-generalise here);
- ``variant="suffix_ngram"``:  ``$ s | g a .``    (key last),

where ``g`` is an ``ngram``-gram occurring exactly once in ``s`` and ``a`` is the rest of ``s`` after it (or its
first ``answer_len`` chars). Loss is on ``a`` and the final ``.`` only (the paper's mask), never on PAD.

Convention: ``labels[t]`` is the target predicted from position ``t``; on the answer it is ``inputs[t + 1]``
(the final ``.`` may fall just past the row: the row must hold the example minus its last token).
Exact-match string accuracy = all supervised positions of a row correct.

Worked example, ``make_batch(1, 12, vocab_size=26, min_len=4, max_len=4)`` with s = "dcab" (3 2 0 1)::

    position  0    1    2    3    4    5    6    7    8    9    10   11
    inputs    26   3    2    0    1    27   3    2    0    1    28   29
    labels  -100 -100 -100 -100 -100   3    2    0    1    28 -100 -100

``max_len=None`` takes the longest string that fits ``seq_len``; for the paper's evaluation at one string length L,
pass ``min_len = max_len = L``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ssmbench.synthetic._common import IGNORE_INDEX, Batch, TaskSpec, check_batch, check_int, make_generator

NAME = "copying"
VARIANTS = ("copy", "prefix_ngram", "suffix_ngram")
_MAX_RESAMPLE = 100  # rounds of re-drawing strings that lack a unique n-gram before giving up


def _row_len(variant: str, length: int, ngram: int, answer_len: int | None) -> int:
    """Tokens of the longest example with a string of ``length`` chars (the answer is longest when g starts s)."""
    if variant == "copy":
        return length + (length if answer_len is None else answer_len) + 3
    answer = length - ngram if answer_len is None else answer_len
    return length + ngram + answer + (4 if variant == "prefix_ngram" else 3)


def resolve(seq_len: int, params: dict[str, Any]) -> dict[str, Any]:
    """Validate params; ``max_len=None`` becomes the longest string whose example fits ``seq_len``."""
    p = dict(params)
    V = check_int(NAME, "vocab_size", p["vocab_size"], 2)
    if p["variant"] not in VARIANTS:
        raise ValueError(f"{NAME}: variant must be one of {', '.join(VARIANTS)}, got {p['variant']!r}")
    variant = p["variant"]
    n = check_int(NAME, "ngram", p["ngram"], 1)
    a = p["answer_len"]
    if a is not None:
        check_int(NAME, "answer_len", a, 1)
    if variant != "copy" and n * math.log2(V) > 62:
        raise ValueError(f"{NAME}: ngram={n} over {V} symbols overflows the int64 n-gram hash; use ngram <= "
                         f"{int(62 // math.log2(V))}")
    # An n-gram variant needs the key plus at least one (or answer_len) following chars in s.
    need = (a or 1) + (n if variant != "copy" else 0)
    min_len = check_int(NAME, "min_len", p["min_len"], need)
    if p["max_len"] is None:
        # _row_len is linear in the string length: slope 2 (answer = rest of s) or 1 (fixed answer_len).
        slope = 2 if a is None else 1
        p["max_len"] = (seq_len + 1 - _row_len(variant, 0, n, a)) // slope
        if p["max_len"] < min_len:
            raise ValueError(f"{NAME}: seq_len {seq_len} is too short for a {variant} example with strings of "
                             f"min_len={min_len} chars (needs seq_len >= {_row_len(variant, min_len, n, a) - 1})")
    max_len = check_int(NAME, "max_len", p["max_len"], min_len)
    rows = _row_len(variant, max_len, n, a)
    if rows > seq_len + 1:
        raise ValueError(f"{NAME}: a {variant} example with strings of {max_len} chars needs seq_len >= {rows - 1} "
                         f"(the row holds all but the final '.'), got {seq_len}; lower max_len/min_len or raise "
                         "seq_len")
    return p


def _unique_ngram_starts(s: torch.Tensor, lengths: torch.Tensor, n: int, base: int, need: int) -> torch.Tensor:
    """(rows, P) bool: start i of an n-gram that occurs exactly once in s[:l] and has ``need`` chars after it."""
    P = s.shape[1] - n + 1
    weights = base ** torch.arange(n, dtype=torch.long)
    h = (s.unfold(1, n, 1) * weights).sum(-1)  # (rows, P) exact int64 hash of each window
    start = torch.arange(P)
    inside = start[None] <= (lengths[:, None] - n)
    h = torch.where(inside, h, -1 - start[None])  # distinct negatives: windows past the end never match
    sorted_h, order = h.sort(dim=1)
    same = sorted_h[:, 1:] == sorted_h[:, :-1]
    dup_sorted = torch.zeros_like(sorted_h, dtype=torch.bool)
    dup_sorted[:, 1:] |= same
    dup_sorted[:, :-1] |= same
    dup = torch.empty_like(dup_sorted).scatter_(1, order, dup_sorted)
    return inside & ~dup & (start[None] + n + need <= lengths[:, None])


def make_batch(n: int, seq_len: int, *, vocab_size: int, min_len: int = 5, max_len: int | None = None,
               variant: str = "copy", ngram: int = 3, answer_len: int | None = None,
               generator: torch.Generator | None = None, seed: int | None = None) -> Batch:
    """Copying / n-gram-lookup batch: ``inputs, labels`` both ``LongTensor (n, seq_len)``; see the module docstring.

    vocab_size: alphabet size V (the model needs V + 4 ids). min_len, max_len: string length range (inclusive).
    variant: "copy", "prefix_ngram" or "suffix_ngram". ngram: key length for the lookup variants.
    answer_len: answer = first answer_len chars (copy) / after the key (lookup); None = the whole rest.
    """
    check_batch(NAME, n, seq_len)
    p = resolve(seq_len, dict(vocab_size=vocab_size, min_len=min_len, max_len=max_len, variant=variant,
                              ngram=ngram, answer_len=answer_len))
    V, lo, hi, variant, k, a = (p[key] for key in ("vocab_size", "min_len", "max_len", "variant", "ngram",
                                                   "answer_len"))
    BOS, SEP, EOS, PAD = V, V + 1, V + 2, V + 3
    g = make_generator(generator, seed)

    lengths = torch.randint(lo, hi + 1, (n,), generator=g)
    s = torch.randint(0, V, (n, hi), generator=g)
    zero = torch.zeros(n, dtype=torch.long)
    one = torch.ones(n, dtype=torch.long)
    if variant == "copy":
        ans_len = lengths if a is None else torch.full((n,), a)
        # (constant token or None = chars of s, offset into s, length, supervised)
        segments = [(BOS, zero, one, False), (None, zero, lengths, False), (SEP, zero, one, False),
                    (None, zero, ans_len, True), (EOS, zero, one, True)]
    else:
        key_start = _choose_key(s, lengths, k, V, a or 1, g)
        ans_start = key_start + k
        ans_len = lengths - ans_start if a is None else torch.full((n,), a)
        key_len = torch.full((n,), k)
        if variant == "prefix_ngram":
            segments = [(BOS, zero, one, False), (None, key_start, key_len, False), (SEP, zero, one, False),
                        (None, zero, lengths, False), (SEP, zero, one, False), (None, ans_start, ans_len, True),
                        (EOS, zero, one, True)]
        else:
            segments = [(BOS, zero, one, False), (None, zero, lengths, False), (SEP, zero, one, False),
                        (None, key_start, key_len, False), (None, ans_start, ans_len, True), (EOS, zero, one, True)]

    # Lay the segments out side by side, vectorised over rows and positions (a loop over <= 7 segments).
    t = torch.arange(seq_len + 1)[None]
    full = torch.full((n, seq_len + 1), PAD, dtype=torch.long)
    target = torch.zeros(n, seq_len + 1, dtype=torch.bool)
    begin = torch.zeros(n, 1, dtype=torch.long)
    for token, offset, length, supervised in segments:
        rel = t - begin
        here = (rel >= 0) & (rel < length[:, None])
        value = s.gather(1, (offset[:, None] + rel).clamp(0, hi - 1)) if token is None else token
        full = torch.where(here, value, full)
        target |= here & supervised
        begin = begin + length[:, None]
    inputs = full[:, :-1].contiguous()
    labels = torch.where(target[:, 1:], full[:, 1:], IGNORE_INDEX)
    return inputs, labels


def _choose_key(s: torch.Tensor, lengths: torch.Tensor, n: int, base: int, need: int,
                g: torch.Generator | None) -> torch.Tensor:
    """Start of a uniformly chosen unique n-gram per row (``s`` is re-drawn in place for rows that have none)."""
    key_start = torch.zeros(s.shape[0], dtype=torch.long)
    todo = torch.arange(s.shape[0])
    for _ in range(_MAX_RESAMPLE):
        ok = _unique_ngram_starts(s[todo], lengths[todo], n, base, need)
        score = torch.where(ok, torch.rand(ok.shape, generator=g), -1.0)
        found = ok.any(dim=1)
        key_start[todo[found]] = score[found].argmax(dim=1)
        todo = todo[~found]
        if todo.numel() == 0:
            return key_start
        s[todo] = torch.randint(0, base, (todo.numel(), s.shape[1]), generator=g)  # as Jelassi: same l, new s
    raise ValueError(f"{NAME}: no {n}-gram occurring exactly once in {_MAX_RESAMPLE} random strings of length "
                     f"{int(lengths[todo[0]])} over {base} symbols; use a larger ngram or vocab_size, or shorter "
                     "strings")


def _vocab(params: Mapping[str, Any]) -> int:
    return int(params["vocab_size"]) + 4


def _chance(params: Mapping[str, Any]) -> float:
    return 1.0 / params["vocab_size"]  # per-character uniform guess over the alphabet


TASK = TaskSpec(
    name=NAME,
    summary="copy a random string after a separator, or look up the text after a unique n-gram (Jelassi et al.)",
    source="sjelassi/transformers_ssm_copy synthetic_exps/data_utils.py (ICML 2024, arXiv 2402.01032)",
    generate=make_batch,
    resolve=resolve,
    total_vocab=_vocab,
    chance_acc=_chance,
    # docs/tasks.md §7: 26 letters; train strings U[5, 20] (seq_len 42), evaluate string lengths up to 60.
    defaults=dict(vocab_size=26, min_len=5, max_len=None, variant="copy", ngram=3, answer_len=None),
    lengths=(42, 62, 82, 122),
    train_length=42,
    # Jelassi Fig. 1b: train on strings <= 50 chars, test up to 1000 (seq_len = 2 L + 2).
    paper=dict(vocab_size=26, min_len=5, max_len=None, variant="copy", ngram=3, answer_len=None),
    paper_lengths=(102, 202, 402, 1002, 2002),
    paper_train_length=102,
)
