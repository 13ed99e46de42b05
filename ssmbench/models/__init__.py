"""Model families. ``build(name, ...)`` turns a registry name + sizes into (config, SequenceModel)."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from ssmbench.registry import MODELS


def config_fields(config_cls: type) -> set[str]:
    return {f.name for f in fields(config_cls)}


def make_config(name: str, *, backend: str = "auto", d_model: int = 256, n_layers: int = 2,
                vocab_size: int = 256, options: dict[str, Any] | None = None, strict: bool = False) -> Any:
    """The family's config with the shared sizes and those ``options`` the family has.

    Options a family does not have (``d_state`` for the transformer) are skipped so one sweep can pass
    family-specific knobs; ``strict=True`` makes them an error instead.
    """
    cls = MODELS.load(name)
    known = config_fields(cls)
    opts = dict(options or {})
    unknown = set(opts) - known
    if strict and unknown:
        raise ValueError(f"model '{name}' has no option(s) {', '.join(sorted(unknown))}; "
                         f"it has: {', '.join(sorted(known))}")
    kw = {k: v for k, v in opts.items() if k in known}
    return cls(d_model=d_model, n_layers=n_layers, vocab_size=vocab_size, backend=backend, **kw)


def count_params(config: Any) -> int:
    """Parameter count: analytic where the config has one (no torch needed), else a meta-device build, else a
    real one (an init that needs real values, e.g. an eigendecomposition)."""
    try:
        return config.param_count()
    except (AttributeError, NotImplementedError):
        pass
    import torch

    try:
        with torch.device("meta"):
            return config.build().num_params()
    except (RuntimeError, NotImplementedError):  # an init that needs real values (e.g. an eigendecomposition)
        return config.build().num_params()


def match_params(config: Any, target: int, step: int = 16) -> Any:
    """Same family, d_model changed (multiples of ``step``) so the parameter count is closest to ``target``."""
    best, best_gap = config, abs(count_params(config) - target)
    for d in range(step, 8 * config.d_model + 1, step):
        try:
            candidate = replace(config, d_model=d)
            gap = abs(count_params(candidate) - target)
        except (ValueError, RuntimeError):
            continue  # a width the family cannot take (e.g. heads that don't divide it)
        if gap < best_gap:
            best, best_gap = candidate, gap
    return best
