"""The accuracy protocol's phases: screen the lr grid at one seed, extend an edge winner, then the other seeds.

A protocol *group* is one model in one task setting (``protocol_key``); its cases differ only in lr, role and seed.
Phases are planned from the stored rows, never from memory, so a crash loses at most the case in flight and the
same command resumes where it stopped (finished cases are skipped by the runner):

1. screen: every lr of the grid at the first seed (role "screen"; planned by :mod:`ssmbench.train.plan`);
2. extension: when the validation winner sits on an edge of a grid of >= 2 values, one more screen case one grid
   step beyond it (once per group);
3. seeds: ``seeds - 1`` further seeds at the chosen lr (role "seed"); the screen case at that lr is seed one.

The lr is chosen from validation rows only (:func:`ssmbench.synthetic.metrics.validation_scores`). See
docs/tasks.md ("The accuracy protocol").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd

from ssmbench import store
from ssmbench.case import Case, protocol_key
from ssmbench.synthetic.metrics import edge_extension, select_lr, validation_scores


def group_of(case: Case) -> str:
    return protocol_key(json.loads(case.to_json()))


def with_lr(case: Case, lr: float, role: str, seed: int) -> Case:
    options = tuple(sorted({**dict(case.options), "lr": float(lr), "role": role}.items()))
    return replace(case, options=options, seed=seed)


def next_phase(screen: Sequence[Case], rows: pd.DataFrame) -> tuple[list[Case], dict[str, float]]:
    """(cases the stored rows call for next, chosen lr per group so far). A group whose screen cases have not all
    finished is left alone (it is picked up when they have)."""
    # Only ok cases count: a failed screen case waits for --retry-failed instead of dropping out of the selection.
    finished = set(rows[rows.status == "ok"].case_id.unique()) if not rows.empty else set()
    groups: dict[str, list[Case]] = {}
    for case in screen:
        groups.setdefault(group_of(case), []).append(case)
    planned: list[Case] = []
    chosen: dict[str, float] = {}
    for key, cases in groups.items():
        base = cases[0]
        opts = dict(base.options)
        grid = tuple(opts.get("lr_grid", (opts["lr"],)))
        screens = [with_lr(base, lr, "screen", base.seed) for lr in grid]
        if not all(c.case_id in finished for c in screens):
            continue
        mine = rows[rows.case_id.isin({c.case_id for c in screens})]
        lr = select_lr(validation_scores(mine, opts.get("metric", "accuracy")))
        extra = edge_extension(grid, lr)
        if extra is not None:
            ext = with_lr(base, extra, "screen", base.seed)
            if ext.case_id not in finished:
                planned.append(ext)
                continue
            mine = rows[rows.case_id.isin({c.case_id for c in [*screens, ext]})]
            lr = select_lr(validation_scores(mine, opts.get("metric", "accuracy")))
        chosen[key] = lr
        planned += [with_lr(base, lr, "seed", base.seed + k) for k in range(1, int(opts.get("seeds", 1)))]
    return planned, chosen


def run_protocol(screen: Sequence[Case], root: str | Path, run: Callable[[list[Case]], object],
                 max_phases: int = 4) -> list[Case]:
    """Run the screen (with whatever later cases the rows already stored call for, so a resumed run keeps every
    worker busy), then each phase the stored rows call for, until none does. ``run(cases)`` runs cases
    (skipping finished ones). Returns every case of the protocol (for the caller's summary)."""
    everything = list(dict.fromkeys(screen))
    batch = everything + next_phase(screen, store.load(root))[0]
    for _ in range(max_phases + 1):
        new = [c for c in batch if c not in everything]
        everything += new
        run(list(dict.fromkeys(batch)))
        planned, _ = next_phase(screen, store.load(root))
        batch = [c for c in planned if c not in everything]
        if not batch:
            break
    return everything


def describe(cases: Sequence[Case]) -> list[str]:
    """One line per protocol group of a dry run: what the screen runs and what follows it."""
    out = []
    groups: dict[str, list[Case]] = {}
    for case in cases:
        groups.setdefault(group_of(case), []).append(case)
    for grp in groups.values():
        c, opts = grp[0], dict(grp[0].options)
        grid = ", ".join(f"{x:g}" for x in opts.get("lr_grid", (opts["lr"],)))
        out.append(f"{c.model} {c.task} L={c.seq_len}: screen lr {{{grid}}} at seed {c.seed}, then "
                   f"{int(opts.get('seeds', 1)) - 1} more seed(s) at the lr chosen on validation "
                   "(+1 grid step if it is on an edge)")
    return out

