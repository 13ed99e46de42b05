"""A test-only model (hidden from listings) that misbehaves on demand, so the runner's failure handling and the
regression gate can be tested for real: it raises, hangs, kills its own process, or does ``work_factor`` times the
compute of a plain MLP model (a real slowdown, not a sleep).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import torch
from torch import nn

from ssmbench.models.blocks import MLP, ModelConfig, SequenceModel, interleave


class FaultyMixer(nn.Module):
    def __init__(self, d_model: int, fault: str, work_factor: float) -> None:
        super().__init__()
        self.fault, self.work_factor = fault, work_factor
        self.mlp = MLP(d_model, expand=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fault == "raise":
            raise RuntimeError("faulty model: deliberate failure")
        if self.fault == "oom":
            raise torch.OutOfMemoryError("faulty model: deliberate out of memory")
        if self.fault == "hang":
            time.sleep(3600)
        if self.fault == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        y = self.mlp(x)
        # work_factor - 1 extra MLP passes, the last one over a matching fraction of the positions.
        extra = self.work_factor - 1.0
        while extra > 1e-9:
            n = max(1, round(min(extra, 1.0) * x.shape[1]))
            y = torch.cat([y[:, :n] + self.mlp(x[:, :n]), y[:, n:]], dim=1)
            extra -= 1.0
        return y

    def allocate_inference_cache(self, batch: int, max_len: int, dtype: torch.dtype) -> None:
        return None

    def step(self, x: torch.Tensor, cache: None) -> torch.Tensor:
        return self.forward(x[:, None, :])[:, 0]


@dataclass(frozen=True)
class FaultyConfig(ModelConfig):
    d_model: int = 64
    n_layers: int = 1
    vocab_size: int = 256
    backend: str = "auto"
    fault: str = "none"  # none | raise | oom | hang | crash
    work_factor: float = 1.0  # >1 adds real compute (used to test the regression gate)

    def build(self) -> SequenceModel:
        mixers = interleave(self.n_layers, lambda i: FaultyMixer(self.d_model, self.fault, self.work_factor))
        return SequenceModel(self.vocab_size, self.d_model, mixers)
