"""Every registered task (ssmbench.registry.TASKS) loads and generates valid batches at two lengths."""

from __future__ import annotations

import pytest
import torch

from ssmbench.registry import TASKS
from ssmbench.synthetic import IGNORE_INDEX, TaskSpec

ENTRIES = list(TASKS)


def test_all_four_tasks_registered_with_user_aliases():
    assert {e.name for e in ENTRIES} >= {"copying", "selective_copying", "mqar", "induction_heads"}
    for alias, name in [("selective_recall", "mqar"), ("MQAR", "mqar"), ("selcopy", "selective_copying"),
                        ("selective_copying", "selective_copying"), ("copy", "copying"), ("copying", "copying"),
                        ("induction", "induction_heads"), ("induction_heads", "induction_heads")]:
        assert TASKS.get(alias).name == name


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_task_generates_valid_batches(entry):
    task = entry.load()
    assert isinstance(task, TaskSpec) and task.name == entry.name
    assert task.lengths and task.paper_lengths and task.summary and task.source
    for seq_len in task.lengths[:2]:
        params = task.params(seq_len)
        V = task.vocab_size(params)
        assert 0 < task.chance(params) < 1
        x, y = task.make_batch(5, seq_len, seed=0)
        assert x.shape == y.shape == (5, seq_len) and x.dtype == y.dtype == torch.long
        assert int(x.min()) >= 0 and int(x.max()) < V
        supervised = y != IGNORE_INDEX
        assert supervised.any(dim=1).all()  # every row carries loss
        assert (y[supervised] >= 0).all() and (y[supervised] < V).all()
        x2, y2 = task.make_batch(5, seq_len, seed=0)
        x3, _ = task.make_batch(5, seq_len, seed=1)
        assert torch.equal(x, x2) and torch.equal(y, y2) and not torch.equal(x, x3)
        # The paper-scale parameters validate at the paper's first length.
        task.params(task.paper_lengths[0], **task.paper)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_unknown_parameter_is_rejected(entry):
    with pytest.raises(ValueError, match="unknown parameter"):
        entry.load().params(64, not_a_param=1)
