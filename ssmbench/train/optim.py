"""Optimiser set-up of an accuracy case: parameter groups (with the model files' hints), schedule, seed streams.

- Parameter groups: AdamW decay on weight matrices only. A parameter that carries ``_optim`` (a dict such as
  S4's ``{"lr": 1e-3, "weight_decay": 0.0}`` on dt/A/P/B) gets its own group with those values: S4 keeps its
  SSM dynamics at lr 1e-3 without decay whatever the peak lr of the rest of the model is.
- Schedule: ``constant`` is constant; ``cosine`` decays to 0 at the last step; warm-up is its own knob (steps of
  linear warm-up before either), so ``constant`` with ``warmup = 0`` is exactly the peak lr at every step.
- Seeds: every random stream of a case (init, training batches, validation rows, test rows) is spawned from one
  numpy ``SeedSequence`` with a distinct spawn key, so no two streams can share a seed (docs/tasks.md).
"""

from __future__ import annotations

import math
from typing import Any

# Parameters that are not weight matrices although they are >= 2-D: SSM dynamics (decay would pull them to 0).
NO_DECAY_NAMES = ("A_log", "A_log_real", "A_imag", "A_real", "log_dt", "dt_bias", "inv_dt", "D")
SCHEDULES = ("cosine", "constant")
ROOT_ENTROPY = 0x55_4D_42_45_4E_43_48  # "SSMBENCH": the root of every stream
STREAMS = {"init": 0, "train": 1, "validation": 2, "test": 3}


def param_groups(model: Any, weight_decay: float, lr: float) -> list[dict[str, Any]]:
    """AdamW groups. Decay on weight matrices (>= 2-D) only; norms, biases, D and SSM dynamics get none; a
    parameter's ``_optim`` hint (lr and/or weight_decay) overrides both for that parameter."""
    groups: dict[tuple[float, float], list[Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        skip = p.ndim < 2 or leaf in NO_DECAY_NAMES or getattr(p, "_no_weight_decay", False)
        hint = getattr(p, "_optim", None) or {}
        key = (float(hint.get("lr", lr)), float(hint.get("weight_decay", 0.0 if skip else weight_decay)))
        groups.setdefault(key, []).append(p)
    return [{"params": ps, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in sorted(groups.items())]


def lr_factor(step: int, steps: int, warmup_steps: int, schedule: str = "cosine") -> float:
    """Multiplier of each group's lr at ``step`` (0-based): linear warm-up over ``warmup_steps``, then constant 1
    or a cosine from 1 at the end of the warm-up to 0 at ``steps``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose from {', '.join(SCHEDULES)}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def stream_seed(stream: str, *key: int) -> int:
    """A 63-bit seed for ``stream`` ("init", "train", "validation", "test") and its key (the run seed, or the
    evaluation length). Distinct (stream, key) pairs are distinct SeedSequence spawn keys: never the same seed."""
    import numpy as np

    seq = np.random.SeedSequence(ROOT_ENTROPY, spawn_key=(STREAMS[stream], *(int(k) for k in key)))
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def torch_generator(stream: str, *key: int) -> Any:
    import torch

    return torch.Generator().manual_seed(stream_seed(stream, *key))
