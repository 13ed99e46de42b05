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
