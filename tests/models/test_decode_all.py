"""Every registered model family (ssmbench.registry.MODELS), float64: the decode path equals the parallel forward.

- step by step from an empty cache == forward at every position;
- prefill(prompt) then step(continuation) == forward(prompt + continuation) (and prefill's own logits == forward);
- the generic step-by-step prefill (for mixers without ``prefill``) == the native one;
- the CUDA-graph-safe step (``static_cache``) == forward, and decoding never reallocates the cache;
- rewinding a cache (CacheSnapshot) replays the same tokens.

Families whose module does not import yet (being written) are skipped, not failed.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from ssmbench.models import make_config
from ssmbench.models.inference import NATIVE, STATELESS, STEP_LOOP, CacheSnapshot, enable_static, mixer_prefill, prefill
from ssmbench.registry import MODELS

NAMES = MODELS.names()
VOCAB, BATCH = 17, 2
RTOL, ATOL = 1e-9, 1e-10


def build(name: str, seed: int = 0) -> nn.Module:
    try:
        MODELS.load(name)
    except ImportError as exc:  # the family's module is still being written
        pytest.skip(f"model '{name}' does not import yet: {exc}")
    torch.manual_seed(seed)
    # d_state 16 keeps the S4-DPLR step (dense N x N per channel) cheap; families without the field ignore it
    config = make_config(name, d_model=64, n_layers=2, vocab_size=VOCAB, options={"d_state": 16})
    return config.build().double().eval()


def tokens(length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (BATCH, length), generator=torch.Generator().manual_seed(seed))


def data_ptrs(cache: Any) -> list[int]:
    if isinstance(cache, torch.Tensor):
        return [cache.data_ptr()]
    if isinstance(cache, dict):
        return [p for v in cache.values() for p in data_ptrs(v)]
    if isinstance(cache, (list, tuple)):
        return [p for v in cache for p in data_ptrs(v)]
    return []


@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_step_equals_forward(name: str) -> None:
    model = build(name)
    x = tokens(11)
    parallel = model(x)
    cache = model.allocate_inference_cache(BATCH, 11)
    ptrs = data_ptrs(cache)
    steps = torch.stack([model.step(x[:, t], cache) for t in range(11)], dim=1)
    torch.testing.assert_close(steps, parallel, rtol=RTOL, atol=ATOL)
    assert data_ptrs(cache) == ptrs, "a step must update its preallocated cache in place"


@pytest.mark.parametrize("prompt_len", [1, 3, 8], ids=lambda n: f"prompt{n}")
@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_prefill_then_step_equals_forward(name: str, prompt_len: int) -> None:
    # prompt lengths below, at and above Mamba's d_conv - 1 exercise the zero-padded conv state
    model = build(name)
    x = tokens(prompt_len + 5)
    full = model(x)
    cache = model.allocate_inference_cache(BATCH, prompt_len + 5)
    ptrs = data_ptrs(cache)
    logits, _ = prefill(model, x[:, :prompt_len], cache, all_logits=True)
    torch.testing.assert_close(logits, full[:, :prompt_len], rtol=RTOL, atol=ATOL)
    last, _ = prefill(model, x[:, :prompt_len], model.allocate_inference_cache(BATCH, prompt_len))
    torch.testing.assert_close(last, full[:, prompt_len - 1], rtol=RTOL, atol=ATOL)
    cont = torch.stack([model.step(x[:, t], cache) for t in range(prompt_len, prompt_len + 5)], dim=1)
    torch.testing.assert_close(cont, full[:, prompt_len:], rtol=RTOL, atol=ATOL)
    assert data_ptrs(cache) == ptrs, "prefill must fill the preallocated cache in place"


class HidePrefill(nn.Module):
    """Wraps a mixer and exposes only forward/allocate/step, so the generic step-loop prefill runs."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)

    def allocate_inference_cache(self, batch: int, max_len: int, dtype: torch.dtype) -> Any:
        return self.inner.allocate_inference_cache(batch, max_len, dtype)

    def step(self, x: torch.Tensor, cache: Any) -> torch.Tensor:
        return self.inner.step(x, cache)


@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_generic_step_loop_prefill_equals_native(name: str) -> None:
    model = build(name)
    x = tokens(6)
    for block in model.blocks:
        native_cache = block.mixer.allocate_inference_cache(BATCH, 8, torch.float64)
        if native_cache is None or not hasattr(block.mixer, "prefill"):
            continue
        h = torch.randn(BATCH, 6, model.embedding.embedding_dim, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(3))
        y_native, path_native = mixer_prefill(block.mixer, h, native_cache)
        loop_cache = block.mixer.allocate_inference_cache(BATCH, 8, torch.float64)
        y_loop, path_loop = mixer_prefill(HidePrefill(block.mixer), h, loop_cache)
        assert (path_native, path_loop) == (NATIVE, STEP_LOOP)
        torch.testing.assert_close(y_native, y_loop, rtol=RTOL, atol=ATOL)
        # the caches agree where it matters: the next step gives the same output
        nxt = torch.randn(BATCH, h.shape[-1], dtype=torch.float64)
        torch.testing.assert_close(block.mixer.step(nxt, native_cache), block.mixer.step(nxt, loop_cache),
                                   rtol=RTOL, atol=ATOL)
    model.blocks[0].mixer = HidePrefill(model.blocks[0].mixer)  # whole-model prefill records the fallback
    cache = model.allocate_inference_cache(BATCH, 6)
    _, paths = prefill(model, x, cache)
    assert paths[0] == (STEP_LOOP if cache[0] is not None else STATELESS)


@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_static_step_equals_forward(name: str) -> None:
    model = build(name)
    x = tokens(9)
    full = model(x)
    cache = model.allocate_inference_cache(BATCH, 9)
    prefill(model, x[:, :4], cache)
    enable_static(model, cache)
    cont = torch.stack([model.step(x[:, t], cache) for t in range(4, 9)], dim=1)
    torch.testing.assert_close(cont, full[:, 4:], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_rewound_cache_replays_the_same_tokens(name: str) -> None:
    model = build(name)
    x = tokens(12)
    cache = model.allocate_inference_cache(BATCH, 12)
    prefill(model, x[:, :6], cache)
    snap = CacheSnapshot.take(model, cache, BATCH, torch.float64)

    def decode() -> torch.Tensor:
        return torch.stack([model.step(x[:, t], cache) for t in range(6, 12)], dim=1)

    first = decode()
    snap.restore(cache)
    torch.testing.assert_close(decode(), first, rtol=0, atol=0)
