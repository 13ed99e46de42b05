import pytest

from ssmbench.case import Case


@pytest.fixture
def tiny_case():
    """A factory for small, fast speed cases on the CPU."""

    def make(model: str = "faulty", **kw) -> Case:
        base = dict(kind="speed", model=model, backend="auto", mode="fwd", device="cpu", dtype="float32", batch=2,
                    seq_len=16, d_model=32, n_layers=1, vocab_size=32, warmup=1, samples=3, budget_s=0.0,
                    threads=1, timeout_s=120.0)
        base.update(kw)
        return Case(**base)

    return make


@pytest.fixture
def fit_fixed_batch():
    """Train a model on one fixed batch of next-token prediction with AdamW; returns the per-step losses."""
    import torch

    def fit(model, tokens, steps: int = 12, lr: float = 1e-2) -> list[float]:
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        losses = []
        for _ in range(steps):
            logits = model(inputs)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    return fit
