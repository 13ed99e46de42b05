import pytest

from ssmbench.case import Case


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests skip without a CUDA device, and a test that skips for want of CUDA must be marked ``gpu`` (so
    ``-m gpu`` on a GPU machine selects every CUDA test, and ``-m "not gpu"`` none)."""
    import torch

    has_cuda = torch.cuda.is_available()
    for item in items:
        cuda_skip = any(m.name == "skipif" and "cuda" in str(m.kwargs.get("reason", "")).lower()
                        for m in item.iter_markers())
        if cuda_skip and item.get_closest_marker("gpu") is None:
            raise pytest.UsageError(f"{item.nodeid} needs CUDA but is not marked @pytest.mark.gpu")
        if item.get_closest_marker("gpu") is not None and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device (gpu marker)"))


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


@pytest.fixture
def no_mixing_floor():
    """The lowest next-token loss a model *without sequence mixing* can reach on a fixed batch: such a model sees
    only the current token, so its best is the conditional entropy H(next | current) of the batch's token pairs.
    A "trains" test asserting a final loss well below this floor fails when the mixer is broken (e.g. its output
    multiplied by zero), which a loss-ratio threshold does not (embedding + head alone learn the bigrams)."""
    import math
    from collections import Counter

    def floor(tokens) -> float:
        cur, nxt = tokens[:, :-1].flatten().tolist(), tokens[:, 1:].flatten().tolist()
        pairs, singles = Counter(zip(cur, nxt, strict=True)), Counter(cur)
        return -sum(c * math.log(c / singles[a]) for (a, _), c in pairs.items()) / len(cur)

    return floor
