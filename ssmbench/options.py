"""Model options (``--option KEY=VALUE``, ``model_options = {...}``) checked against the model config dataclasses.

Keys must be fields of the models in the run ("did you mean" otherwise), values must match the field's type and
range, and each config must accept them at the run's sizes (its own ``__post_init__`` checks). Used by the input
schema (``schema.py``: sweeps, suites), ``generate``, ``check`` and the accuracy planner. Loading the config
classes goes through the registry.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from typing import Any

from ssmbench.spec import SpecError

# Integer model options that may be below 1 (all others must be >= 1), and the largest integer accepted.
OPTION_MINIMUM = {"mlp_expand": 0, "attn_every": 2}
OPTION_MAX = 1 << 20
_FRAME = {"d_model", "n_layers", "vocab_size", "backend"}  # set by their own keys, never as options


def did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _option_rule(field_type: str, name: str) -> tuple[type | tuple[type, ...], str]:
    """(accepted Python types, description) of a config field from its annotation text."""
    text = str(field_type)
    if "bool" in text:
        return bool, "true or false"
    if "int" in text:
        return int, f"an integer >= {OPTION_MINIMUM.get(name, 1)}"
    if "float" in text:
        return (int, float), "a positive finite number"
    return str, "a string"


def _check_option_value(where: str, model: str, name: str, field_type: str, value: Any) -> None:
    accepted, rule = _option_rule(field_type, name)
    ok = isinstance(value, accepted) and (accepted is bool or not isinstance(value, bool))
    if ok and accepted is int:
        ok = OPTION_MINIMUM.get(name, 1) <= value <= OPTION_MAX
    elif ok and accepted == (int, float):
        ok = math.isfinite(value) and 0 < value <= 1e12
    elif ok and accepted is str:
        ok = 0 < len(value) <= 200
    if not ok:
        raise SpecError(f"{where}: option {name} of {model} must be {rule}, got {value!r}")


def check_model_options(where: str, options: Mapping[str, Any], models: Sequence[str], *, d_model: int = 256,
                        n_layers: int = 2, vocab_size: int = 256, strict: bool = False) -> None:
    """Option keys and values against the models' config dataclasses.

    A key must be a field of at least one of ``models`` (of each one with ``strict=True``); its value must match
    the field's type and range; and each model's config must accept the options (its own checks, e.g.
    divisibility) at the given sizes.
    """
    from ssmbench.registry import MODELS

    if not isinstance(options, Mapping):
        raise SpecError(f"{where}: model options must be a table, e.g. {{ d_state = 32 }}")
    classes = {m: MODELS.load(m) for m in dict.fromkeys(models)}
    types = {m: {f.name: f.type for f in fields(c) if f.name not in _FRAME} for m, c in classes.items()}
    known = set().union(*types.values()) if types else set()
    for key in options:
        if key in _FRAME:
            raise SpecError(f"{where}: '{key}' is set by its own key/flag (--{key.replace('_', '-')}), "
                            "not as a model option")
        if key not in known:
            owners = [e.name for e in MODELS if key in {f.name for f in fields(e.load())}]
            if owners:  # a real option, of models not in this run
                raise SpecError(f"{where}: {', '.join(classes)} has no option '{key}' (it is an option of "
                                f"{', '.join(owners)}); its options: {', '.join(sorted(known)) or 'none'}")
            every = set().union(*({f.name for f in fields(e.load())} for e in MODELS)) - _FRAME
            hint = did_you_mean(key, known) or did_you_mean(key, every)
            raise SpecError(f"{where}: unknown model option '{key}'{hint} (options of {', '.join(classes)}: "
                            f"{', '.join(sorted(known)) or 'none'})")
        for m in classes:
            if key in types[m]:
                _check_option_value(where, m, key, types[m][key], options[key])
            elif strict:
                raise SpecError(f"{where}: {m} has no option '{key}' (it has: {', '.join(sorted(types[m]))})")
    for m, cls in classes.items():  # the config's own checks (e.g. divisibility), as the worker will build it
        try:
            cls(d_model=d_model, n_layers=n_layers, vocab_size=vocab_size,
                **{k: v for k, v in options.items() if k in types[m]})
        except (TypeError, ValueError) as exc:
            raise SpecError(f"{where}: model {m} rejects these options at d_model={d_model}: {exc}") from None
