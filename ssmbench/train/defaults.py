"""Calibrated CPU protocol per task: the one source of truth that ``ssmbench accuracy`` and tasks/*.toml share.

A key in an ``[[accuracy]]`` table (or a CLI flag) overrides the task's value here, which overrides the generic
default in :data:`ssmbench.train.plan.TABLE_KEYS`. Calibration runs and their numbers: docs/tasks.md.

- ``lr_grid``: the same grid for every family (extended one step when the winner is on an edge);
- ``metric``: the validation/test number the protocol selects on and reports first ("accuracy" = supervised
  tokens, "seq_accuracy" = whole answers; copying's string accuracy excludes the end marker);
- ``threshold``: a seed "reached the task" when its validation metric got there (counted per seed);
- ``stop_at``: early stop once the validation metric reaches it (checked every ``eval_every`` steps).
"""

from __future__ import annotations

from typing import Any

# Model sizes shared by the CPU suites: 2 layers, d_model 64, no MLP, about 35-70k parameters per family.
FAMILY_OPTIONS: dict[str, Any] = {
    "head_dim": 16, "mlp_expand": 0,
    "mamba": {"d_state": 16}, "mamba2": {"d_state": 64, "headdim": 16},
    "s4": {"d_state": 64}, "s4-dplr": {"d_state": 64},
    "hybrid": {"attn_every": 2, "attn_head_dim": 16, "d_state": 64, "headdim": 16},
}

TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    # Mamba Table 11: train at 64, evaluate to 32x. No weight decay; attention wider than Mamba (d_model 128 vs
    # 64: 135k vs 68k parameters, the paper's ~1.85x ratio of MHA 137k to Mamba 74k). RoPE attention (one of
    # the paper's three positional schemes). Every model is near 1.0 at the train length; the claim is about 8-32x.
    "induction_heads": {
        "lengths": "64", "eval_lengths": "32..2k", "steps": 1200, "batch": 32,
        "lr_grid": [3e-4, 1e-3, 3e-3], "schedule": "cosine", "warmup": 0.05, "weight_decay": 0.0,
        "d_model": {"transformer": 128, "default": 64}, "metric": "accuracy", "threshold": 0.9, "stop_at": None,
        "eval_every": 100, "eval_examples": 256, "val_examples": 256, "eval_tokens": 65536,
    },
    # Mamba Table 1 at CPU size: 8 data tokens among 48 blanks (L = 64), A = 10. Constant lr (the paper's). The
    # headline is whole-answer accuracy (all 8 tokens right), where LTI models stay near 0.
    "selective_copying": {
        "lengths": "64", "steps": 1200, "batch": 32, "lr_grid": [1e-3, 3e-3, 1e-2], "schedule": "constant",
        "warmup": 0.02, "weight_decay": 0.0, "metric": "seq_accuracy", "threshold": 0.9, "stop_at": 0.99,
        "eval_every": 100, "eval_examples": 512, "val_examples": 256,
    },
    # Zoology Fig. 2 at (L, kv) = (64, 4): tokens_per_kv 16, zero fillers, V = 512. Zoology sweeps the lr and
    # reports the best per (mixer, width, L); weight decay 0.1 as there.
    "mqar": {
        "lengths": "64", "steps": 1500, "batch": 64, "lr_grid": [1e-3, 3e-3, 1e-2], "schedule": "constant",
        "warmup": 0.02, "weight_decay": 0.1, "params": {"tokens_per_kv": 16, "random_non_queries": False},
        "metric": "accuracy", "threshold": 0.9, "stop_at": 0.99, "eval_every": 100, "eval_examples": 512,
        "val_examples": 256,
    },
    # Jelassi Fig. 1a (sample efficiency): strings of 5..20 letters, one per row (L = 42); headline = string
    # accuracy without the end marker, in distribution = over the training length mix.
    "copying": {
        "lengths": "42", "eval_lengths": "42,62,82,122", "steps": 2000, "batch": 32,
        "lr_grid": [1e-3, 3e-3, 1e-2], "schedule": "cosine", "warmup": 0.05, "weight_decay": 0.1,
        "metric": "seq_accuracy", "threshold": 0.9, "stop_at": 0.99, "eval_every": 100, "eval_examples": 256,
        "val_examples": 256,
    },
}


def task_defaults(task: str) -> dict[str, Any]:
    """The task's calibrated protocol (a copy), with the shared family options; {} for an unknown task."""
    out = dict(TASK_DEFAULTS.get(task, {}))
    if out:
        out.setdefault("model_options", FAMILY_OPTIONS)
    return out


def merge_options(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """model_options: per-family tables merge key by key; a plain key of ``override`` wins over the same key in
    the base's per-family tables too (a user's d_state = 8 applies to every family, as written)."""
    plain = {k for k, v in override.items() if not isinstance(v, dict)}
    out = {k: {kk: vv for kk, vv in v.items() if kk not in plain} if isinstance(v, dict) else v
           for k, v in base.items()}
    for k, v in override.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
