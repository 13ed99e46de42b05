"""A case: one measurement the runner executes in a worker (a model x mode x length x batch, or a training run).

Cases are frozen, JSON-serialisable dataclasses. ``case_id`` hashes every field that changes the measurement
(not the timeout), so re-running the same sweep finds its finished cases and skips them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

# Fields that do not change what is measured, so they stay out of the case id.
_NOT_IN_ID = ("timeout_s",)
# Fields added after results were first stored: left out of the id while at their default, so that adding a field
# never changes the ids (and so the resumability) of existing results directories.
_ID_IF_SET = {"search": "", "max_memory": 0, "compile": "eager"}
# Appended to the backend label of a case with compile == "compiled", so that eager and compiled rows are separate
# series in reports (here, torch-free, so that the report can tell them apart without importing torch).
COMPILED_SUFFIX = "+torch.compile"


@dataclass(frozen=True)
class Case:
    kind: str  # "speed" | "accuracy"
    model: str
    backend: str  # requested backend ("auto" or a name); the one that ran is recorded in the results
    mode: str  # fwd | fwdbwd | prefill | decode | train
    device: str  # resolved: cpu | cuda
    dtype: str
    batch: int
    seq_len: int
    d_model: int
    n_layers: int
    vocab_size: int = 256
    scope: str = "model"
    model_options: tuple[tuple[str, Any], ...] = ()
    match_params: bool = False
    warmup: int = 2
    samples: int = 5
    budget_s: float = 2.0
    threads: int = 0
    seed: int = 0
    task: str = ""  # accuracy cases: the synthetic task
    options: tuple[tuple[str, Any], ...] = field(default=())  # kind-specific options (decode tokens, train steps...)
    timeout_s: float = 600.0
    search: str = ""  # id of the ``ssmbench crossover`` search this probe belongs to ("" = not a probe)
    max_memory: int = 0  # bytes the case may allocate beyond the worker's idle footprint (0 = no cap)
    compile: str = "eager"  # "eager" | "compiled": torch.compile of the forward / training step / decode step

    @property
    def case_id(self) -> str:
        payload = {k: v for k, v in asdict(self).items()
                   if k not in _NOT_IN_ID and not (k in _ID_IF_SET and v == _ID_IF_SET[k])}
        return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def tokens(self) -> int:
        return self.batch * self.seq_len

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    def label(self) -> str:
        backend = "" if self.backend == "auto" else f":{self.backend}"
        task = f" {self.task}" if self.task else ""
        compiled = " compiled" if self.compile == "compiled" else ""
        return f"{self.model}{backend}{task} {self.mode}{compiled} L={self.seq_len} b={self.batch}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Case:
        data = dict(data)
        for key in ("model_options", "options"):
            data[key] = tuple(tuple(item) for item in data.get(key, ()))
        return cls(**data)


# Options that tell the cases of one accuracy-protocol group apart (lr grid point, screen/seed role).
_PER_PROTOCOL_CASE = ("lr", "role")


def protocol_key(case: dict[str, Any]) -> str:
    """Identity of an accuracy case's protocol group (docs/tasks.md §6), from its stored JSON: every field but
    the lr, the role and the seed (and fields added later, at their default, as in ``case_id``). Cases of one
    group differ only in those, so a screen and its seed runs are recognised from the stored rows alone."""
    options = {k: v for k, v in case.get("options", []) if k not in _PER_PROTOCOL_CASE}
    rest = {k: v for k, v in case.items() if k not in ("options", "seed", *_NOT_IN_ID)
            and not (k in _ID_IF_SET and v == _ID_IF_SET[k])}
    return json.dumps({**rest, "options": options}, sort_keys=True, default=str)
