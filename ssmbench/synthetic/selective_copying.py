"""Selective copying (Mamba paper §4.1.1, Table 1), in the layout of state-spaces/s4 ``torch_copying_data``.

Vocabulary of ``A = vocab_size`` ids: 0 = noise/blank, ``1 .. A-2`` = data symbols, ``A-1`` = marker.
A row of total length ``seq_len = L_noise + 2M`` holds ``M`` i.i.d. uniform data tokens at sorted random
positions among the first ``L_noise + M`` slots (all other slots 0), then ``M`` markers. At the i-th marker the
model must emit the i-th data token, so the answer needs content-dependent (selective) memory: the gaps vary.
``variable=False`` is the classic copying task (data tokens in the first ``M`` slots, then ``L_noise`` blanks).

Convention: ``labels[t]`` is the target predicted from position ``t``: the data tokens in order at the ``M`` marker
positions, -100 everywhere else (the answer is never an input token, so this is not a shifted copy of inputs).

Worked example, ``make_batch(1, 10, vocab_size=6, num_tokens=3)`` (L_noise = 4)::

    position  0    1    2    3    4    5    6    7    8    9
    inputs    0    3    0    0    1    4    0    5    5    5
    labels  -100 -100 -100 -100 -100 -100 -100   3    1    4
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ssmbench.synthetic._common import IGNORE_INDEX, Batch, TaskSpec, check_batch, check_bool, check_int, make_generator

NAME = "selective_copying"


def resolve(seq_len: int, params: dict[str, Any]) -> dict[str, Any]:
    """Validate params for ``seq_len`` (which must hold the M data tokens and M markers)."""
    p = dict(params)
    check_int(NAME, "vocab_size", p["vocab_size"], 3)  # noise + >= 1 data symbol + marker
    m = check_int(NAME, "num_tokens", p["num_tokens"], 1)
    check_bool(NAME, "variable", p["variable"])
    if seq_len < 2 * m:
        raise ValueError(f"{NAME}: seq_len = L_noise + 2*num_tokens must be >= {2 * m} for num_tokens={m}, "
                         f"got {seq_len}")
    return p


def make_batch(n: int, seq_len: int, *, vocab_size: int, num_tokens: int = 8, variable: bool = True,
               generator: torch.Generator | None = None, seed: int | None = None) -> Batch:
    """Selective-copying batch: ``inputs, labels`` both ``LongTensor (n, seq_len)``; see the module docstring.

    vocab_size: A, total ids incl. noise (0) and marker (A-1). num_tokens: M tokens to copy.
    variable: random sorted positions (selective copying) vs the first M slots (classic copying).
    """
    check_batch(NAME, n, seq_len)
    p = resolve(seq_len, dict(vocab_size=vocab_size, num_tokens=num_tokens, variable=variable))
    A, M = p["vocab_size"], p["num_tokens"]
    g = make_generator(generator, seed)
    slots = seq_len - M  # L_noise + M slots before the markers

    tokens = torch.randint(1, A - 1, (n, M), generator=g)
    if p["variable"]:
        # A uniform M-subset of the slots per row: the M largest of i.i.d. uniforms, then put in order.
        pos = torch.rand(n, slots, generator=g).topk(M, dim=1).indices.sort(dim=1).values
    else:
        pos = torch.arange(M).expand(n, M)
    inputs = torch.zeros(n, seq_len, dtype=torch.long)
    inputs.scatter_(1, pos, tokens)
    inputs[:, slots:] = A - 1
    labels = torch.full((n, seq_len), IGNORE_INDEX, dtype=torch.long)
    labels[:, slots:] = tokens
    return inputs, labels


def _vocab(params: Mapping[str, Any]) -> int:
    return int(params["vocab_size"])


def _chance(params: Mapping[str, Any]) -> float:
    return 1.0 / (params["vocab_size"] - 2)  # uniform guess over the A-2 data symbols


TASK = TaskSpec(
    name=NAME,
    summary="copy M data tokens scattered among noise, in order, after M markers (Mamba §4.1.1)",
    source="state-spaces/s4 torch_copying_data(variable=True) (src/dataloaders/datasets/copying.py); Mamba App. E.1",
    generate=make_batch,
    resolve=resolve,
    total_vocab=_vocab,
    chance_acc=_chance,
    # docs/tasks.md §7: A = 10 (8 data symbols), M = 8; seq_len = L_noise + 16.
    defaults=dict(vocab_size=10, num_tokens=8, variable=True),
    lengths=(64, 128, 256),
    # Mamba App. E.1: length 4096, vocab 16 incl. noise (s4 layout: 14 data symbols + marker), 16 tokens.
    paper=dict(vocab_size=16, num_tokens=16, variable=True),
    paper_lengths=(4096,),
)
