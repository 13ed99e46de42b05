"""Induction heads (Mamba paper §4.1.2, Table 11), in the format of the H3/safari generator
(``safari/src/dataloaders/synthetics.py::generate_induction_head``, one trigger, ``induction_len = 1``).

Vocabulary of ``V = vocab_size`` ids: ``0 .. V-3`` = symbols, ``V-2`` = trigger (safari's copy prefix "=>"),
``V-1`` = a spare id that never occurs (safari's "noop"; kept so V = 16 matches the paper's vocabulary).
A row is ``seq_len - 1`` uniform symbols in which the trigger overwrites position ``p`` (``0 <= p <= seq_len - 4``,
safari's range) so that it is followed by some symbol ``b``, then a final trigger. The model must answer ``b``
at the final trigger: recall what followed the earlier occurrence of the current token.

Convention: ``labels[t]`` is the target predicted from position ``t``: ``b`` at the last position, -100 elsewhere
(safari's evaluation labels; it also trains on the LM loss of the whole row, which ssmbench does not).

Worked example, ``make_batch(1, 10, vocab_size=6)`` (symbols 0..3, trigger 4, p = 3, b = 2)::

    position  0    1    2    3    4    5    6    7    8    9
    inputs    1    0    3    4    2    2    1    0    3    4
    labels  -100 -100 -100 -100 -100 -100 -100 -100 -100   2
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ssmbench.synthetic._common import IGNORE_INDEX, Batch, TaskSpec, check_batch, check_int, make_generator

NAME = "induction_heads"


def resolve(seq_len: int, params: dict[str, Any]) -> dict[str, Any]:
    """Validate params: V >= 3 (one symbol, the trigger, the spare) and room for ``trigger b ... trigger``."""
    p = dict(params)
    check_int(NAME, "vocab_size", p["vocab_size"], 3)
    if seq_len < 4:
        raise ValueError(f"{NAME}: seq_len must be >= 4 (trigger, answer, one more symbol, final trigger), "
                         f"got {seq_len}")
    return p


def make_batch(n: int, seq_len: int, *, vocab_size: int, generator: torch.Generator | None = None,
               seed: int | None = None) -> Batch:
    """Induction-heads batch: ``inputs, labels`` both ``LongTensor (n, seq_len)``; see the module docstring.

    vocab_size: V, total ids (V-2 symbols, trigger V-2, unused spare V-1).
    """
    check_batch(NAME, n, seq_len)
    V = resolve(seq_len, dict(vocab_size=vocab_size))["vocab_size"]
    g = make_generator(generator, seed)
    trigger = V - 2

    inputs = torch.randint(0, V - 2, (n, seq_len), generator=g)
    p = torch.randint(0, seq_len - 3, (n, 1), generator=g)
    inputs.scatter_(1, p, trigger)
    inputs[:, -1] = trigger
    labels = torch.full((n, seq_len), IGNORE_INDEX, dtype=torch.long)
    labels[:, -1] = inputs.gather(1, p + 1).squeeze(1)
    return inputs, labels


def _vocab(params: Mapping[str, Any]) -> int:
    return int(params["vocab_size"])


def _chance(params: Mapping[str, Any]) -> float:
    return 1.0 / (params["vocab_size"] - 2)  # uniform guess over the symbols


TASK = TaskSpec(
    name=NAME,
    summary="answer the token that followed the earlier trigger; a length-extrapolation probe (Mamba §4.1.2)",
    source="HazyResearch/safari generate_induction_head (src/dataloaders/synthetics.py); Mamba App. E.1",
    generate=make_batch,
    resolve=resolve,
    total_vocab=_vocab,
    chance_acc=_chance,
    # docs/tasks.md §7: V = 16 (14 symbols + trigger + spare); train at 64, test 32..4096.
    defaults=dict(vocab_size=16),
    lengths=(32, 64, 128, 256, 512, 1024, 4096),
    train_length=64,
    # Mamba Table 11: vocab 16, train at 2^8, test 2^6 .. 2^20.
    paper=dict(vocab_size=16),
    paper_lengths=tuple(2**k for k in (6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 20)),
    paper_train_length=256,
)
