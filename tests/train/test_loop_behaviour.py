"""The training loop's contract, through its public functions: gradients are clipped before every optimiser step,
and sequence accuracy counts a row only when *every* supervised position in it is right."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ssmbench.train.loop import evaluate, run_accuracy_case
from ssmbench.train.plan import plan_accuracy


class Echo(nn.Module):
    """Predicts, at every position, the input token itself (one-hot logits): the test sets each prediction."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.head = nn.Identity()

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return 10.0 * nn.functional.one_hot(x, self.vocab).float()


def test_sequence_accuracy_needs_every_supervised_position_right() -> None:
    ig = -100
    inputs = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]])
    labels = torch.tensor([[ig, 2, ig, 4],  # both supervised positions right
                           [ig, 2, ig, 0],  # one right, one wrong
                           [ig, 0, ig, 0],  # both wrong
                           [1, ig, ig, ig]])  # its only supervised position right
    res = evaluate(Echo(5), inputs, labels, rows_per_batch=3, device="cpu")  # batches of 3 then 1 rows
    assert res["accuracy"] == pytest.approx(4 / 7)
    assert res["seq_accuracy"] == pytest.approx(2 / 4)  # rows 0 and 3; `any` would also count row 1
    assert res["loss"] > 0


def test_gradients_are_clipped_before_every_optimiser_step(monkeypatch) -> None:
    """Whatever the implementation, the gradient the optimiser sees has norm <= grad_clip, while unclipped
    gradients of the same run are larger."""
    seen: list[float] = []
    real_step = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    table = {"task": "mqar", "models": "mamba", "lengths": "16", "steps": 4, "batch": 4, "d_model": 16,
             "params": {"vocab_size": 16, "num_kv_pairs": 2}, "eval_examples": 8, "device": "cpu",
             "model_options": {"d_state": 4}}
    run_accuracy_case(plan_accuracy({**table, "grad_clip": 1e6})[0])
    unclipped, seen[:] = list(seen), []
    assert len(unclipped) == 4 and min(unclipped) > 0.05  # the raw gradients are well above the clip below
    run_accuracy_case(plan_accuracy({**table, "grad_clip": 0.05})[0])
    assert len(seen) == 4 and max(seen) <= 0.05 * (1 + 1e-5)
