"""Pieces shared by the synthetic task generators: the ``TaskSpec`` record, seeding and argument checks.

Every task module exposes ``make_batch(n, seq_len, *, vocab_size, generator=None, seed=None, **params)``
returning ``(inputs, labels)``, both ``LongTensor (n, seq_len)`` on the CPU, and a ``TASK = TaskSpec(...)``.
Label convention for all tasks: ``labels[b, t]`` is the token the model must predict from position ``t``
(i.e. from ``inputs[b, :t+1]``), and ``IGNORE_INDEX`` (-100) where there is no loss, so
``F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)`` with ``logits (n, seq_len, V)``
needs no further shifting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

IGNORE_INDEX = -100

Batch = tuple[torch.Tensor, torch.Tensor]


def make_generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator | None:
    """The generator to draw from: ``generator``, else a fresh one seeded with ``seed``, else None (torch's
    global RNG). Passing both is ambiguous and rejected."""
    if generator is not None and seed is not None:
        raise ValueError("pass either generator or seed, not both")
    if generator is not None:
        if generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU generator (batches are built on the CPU), "
                             f"got {generator.device}")
        return generator
    if seed is not None:
        return torch.Generator().manual_seed(int(seed))
    return None


def check_int(task: str, name: str, value: Any, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; bools and floats are rejected so typos don't pass silently."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{task}: {name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{task}: {name} must be >= {minimum}, got {value}")
    return value


def check_bool(task: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{task}: {name} must be True or False, got {value!r}")
    return value


def check_batch(task: str, n: int, seq_len: int) -> None:
    check_int(task, "n (batch size)", n, 1)
    check_int(task, "seq_len", seq_len, 1)


def _frozen(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))


@dataclass(frozen=True, eq=False)
class TaskSpec:
    """A registered synthetic task: its generator, CPU-scale defaults and the papers' GPU-scale setting.

    ``defaults`` lists every task parameter ``make_batch`` accepts (``None`` = derived from ``seq_len``);
    ``params(seq_len, **overrides)`` merges, validates and resolves them, and the result is what
    ``vocab_size`` and ``chance`` take. ``lengths``/``paper_lengths`` are the sequence lengths of the
    canonical CPU sweep (docs/tasks.md §7) and of the paper; where ``train_length`` is set the task is a
    length-extrapolation probe: train at ``train_length``, evaluate at each of ``lengths``.
    """

    name: str
    summary: str
    source: str  # the paper/code whose format the generator follows
    generate: Callable[..., Batch]  # the module's make_batch
    resolve: Callable[[int, dict[str, Any]], dict[str, Any]]  # (seq_len, params) -> validated, resolved params
    total_vocab: Callable[[Mapping[str, Any]], int]  # embedding size the model needs, specials included
    chance_acc: Callable[[Mapping[str, Any]], float]  # accuracy of a format-aware guess without recall
    defaults: Mapping[str, Any] = field(default_factory=dict)
    lengths: tuple[int, ...] = ()
    paper: Mapping[str, Any] = field(default_factory=dict)
    paper_lengths: tuple[int, ...] = ()
    train_length: int | None = None
    paper_train_length: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", _frozen(self.defaults))
        object.__setattr__(self, "paper", _frozen(self.paper))

    def params(self, seq_len: int, **overrides: Any) -> dict[str, Any]:
        """Defaults + overrides, validated for ``seq_len`` and with derived values filled in.

        Raises ValueError for unknown names or invalid values."""
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ValueError(f"{self.name}: unknown parameter(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(self.defaults))}")
        check_int(self.name, "seq_len", seq_len, 1)
        return self.resolve(seq_len, {**self.defaults, **overrides})

    def vocab_size(self, params: Mapping[str, Any] | None = None) -> int:
        """Total vocabulary (embedding rows) the model needs for these params (defaults if None)."""
        return self.total_vocab({**self.defaults, **(params or {})})

    def chance(self, params: Mapping[str, Any]) -> float:
        """Chance accuracy over supervised positions; ``params`` as returned by :meth:`params`."""
        return self.chance_acc({**self.defaults, **params})

    def make_batch(self, n: int, seq_len: int, *, generator: torch.Generator | None = None,
                   seed: int | None = None, **overrides: Any) -> Batch:
        """``generate`` with the task defaults filled in; see the module's ``make_batch``."""
        params = self.params(seq_len, **overrides)
        return self.generate(n, seq_len, generator=generator, seed=seed, **params)
