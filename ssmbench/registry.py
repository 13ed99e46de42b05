"""One lazy registry pattern for models and synthetic tasks.

An entry names its implementation as ``"module:attr"`` so listing names (``ssmbench models``, ``--help``,
spec validation) imports neither torch nor Triton; the target is imported only by :meth:`Registry.load`.
Lookups accept aliases and fail with a "did you mean" suggestion.

Adding a model: write ``ssmbench/models/<family>.py`` with a ``build(config)``, its frozen config dataclass in the
torch-free ``ssmbench/models/configs.py`` (fields d_model, n_layers, vocab_size, backend and the family's own,
``BUILDER`` naming the build function, ``mixer_params()`` for the analytic parameter count), then add one ``Entry``
to ``MODELS`` below.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


class UnknownName(KeyError):
    """A name that is not registered; ``str()`` is the user-facing message."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "module:attr"
    aliases: tuple[str, ...] = ()
    summary: str = ""
    hidden: bool = False  # test-only entries: resolvable, not listed
    ops: tuple[str, ...] = ()  # kernel ops whose backend the model's ``backend`` selects (models only)
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def load(self) -> Any:
        module_name, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module_name), attr)


class Registry:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}

    def add(self, entry: Entry) -> Entry:
        for key in (entry.name, *entry.aliases):
            if key in self._aliases:
                raise ValueError(f"{self.kind} name '{key}' registered twice")
            self._aliases[key] = entry.name
        self._entries[entry.name] = entry
        return entry

    def get(self, name: str) -> Entry:
        key = name.strip().lower()
        if key in self._aliases:
            return self._entries[self._aliases[key]]
        visible = [k for k, v in self._aliases.items() if not self._entries[v].hidden]
        close = difflib.get_close_matches(key, visible, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UnknownName(f"unknown {self.kind} '{name}'{hint} Known: {', '.join(self.names())}")

    def load(self, name: str) -> Any:
        return self.get(name).load()

    def names(self, include_hidden: bool = False) -> list[str]:
        return [n for n, e in self._entries.items() if include_hidden or not e.hidden]

    def __iter__(self) -> Iterator[Entry]:
        return (e for e in self._entries.values() if not e.hidden)

    def __contains__(self, name: str) -> bool:
        return name.strip().lower() in self._aliases


MODELS = Registry("model")
MODELS.add(Entry("transformer", "ssmbench.models.configs:TransformerConfig", aliases=("attention", "gpt"),
                 summary="causal MHA (SDPA) + RoPE + GELU MLP 4x", ops=("attention",)))
MODELS.add(Entry("mamba", "ssmbench.models.configs:MambaConfig", aliases=("mamba1", "s6"),
                 summary="Mamba-1: conv + selective scan (S6), gated", ops=("selective_scan",)))
MODELS.add(Entry("mamba2", "ssmbench.models.configs:Mamba2Config", aliases=("ssd", "mamba-2"),
                 summary="Mamba-2: conv + SSD (multi-head A, grouped B/C), gated RMSNorm", ops=("ssd",)))
MODELS.add(Entry("hybrid", "ssmbench.models.configs:HybridConfig",
                 summary="Mamba-2 layers + attention every 4th layer", ops=("ssd", "attention")))
MODELS.add(Entry("s4", "ssmbench.models.configs:S4Config", aliases=("s4d",),
                 summary="S4D: diagonal SSM (ZOH), Vandermonde kernel + FFT conv, GLU", ops=("s4_kernel",)))
MODELS.add(Entry("s4-dplr", "ssmbench.models.configs:S4DPLRConfig", aliases=("s4dplr", "dplr"),
                 summary="S4: HiPPO-LegS DPLR (bilinear), Cauchy + Woodbury kernel + FFT conv, GLU",
                 ops=("s4_kernel",)))
MODELS.add(Entry("faulty", "ssmbench.models.faulty:FaultyConfig", hidden=True,
                 summary="test-only: raises, hangs, crashes or adds work on demand"))

TASKS = Registry("task")
TASKS.add(Entry("copying", "ssmbench.synthetic.copying:TASK", aliases=("copy",),
                summary="copy a random string / look up the text after a unique n-gram (Jelassi et al. 2024)"))
TASKS.add(Entry("selective_copying", "ssmbench.synthetic.selective_copying:TASK", aliases=("selcopy",),
                summary="copy tokens scattered among noise after markers (Mamba §4.1.1, s4 layout)"))
TASKS.add(Entry("mqar", "ssmbench.synthetic.mqar:TASK", aliases=("selective_recall", "multiquery_ar"),
                summary="multi-query associative recall (Zoology; Mamba-2 hard MQAR)"))
TASKS.add(Entry("induction_heads", "ssmbench.synthetic.induction_heads:TASK", aliases=("induction",),
                summary="recall the token after the earlier trigger; length extrapolation (Mamba §4.1.2)"))
