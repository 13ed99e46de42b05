"""Synthetic accuracy tasks: copying, selective_copying, mqar (selective recall), induction_heads.

Each module has a pure, seeded, vectorised ``make_batch(n, seq_len, *, vocab_size, generator=None, seed=None,
**params) -> (inputs, labels)`` (both ``LongTensor (n, seq_len)``, labels -100 where there is no loss, ``labels[t]``
predicted from position ``t``) and a ``TASK`` (:class:`~ssmbench.synthetic._common.TaskSpec`) with CPU defaults,
the papers' setting, ``vocab_size(params)`` and ``chance(params)``. Look tasks up through
``ssmbench.registry.TASKS`` (lazy: importing this package does not import the task modules).
Formats and sources: docs/tasks.md.
"""

from ssmbench.synthetic._common import IGNORE_INDEX, TaskSpec

__all__ = ["IGNORE_INDEX", "TaskSpec"]
