"""The accuracy protocol's arithmetic, shared by training (lr selection between phases) and the report.

- ``t_interval``: mean and 95% t-interval over seeds;
- ``select_lr``: the learning rate chosen from *validation* numbers only (the caller passes nothing else);
- ``edge_extension``: the one extra grid step when the winner sits on an edge of the grid;
- ``still_falling``: whether a training-loss curve was still going down at the step cap (budget honesty);
- ``answer_mask``: the positions that make up a task's headline *string*: copying excludes its end marker.

The protocol itself is described in docs/tasks.md ("The accuracy protocol").
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

# Two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..30 (above 30 the normal 1.96 is within 2%).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile(df: int) -> float:
    """t_{0.975, df}; df >= 1."""
    if df < 1:
        raise ValueError(f"a t-interval needs at least 2 values (df >= 1), got df={df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% t-interval of the mean over seeds. One value: (v, nan, nan) — no interval
    can be claimed from one seed. NaNs are dropped (a seed that did not finish is not a zero)."""
    xs = [float(v) for v in values if v == v]
    if not xs:
        return math.nan, math.nan, math.nan
    mean = sum(xs) / len(xs)
    if len(xs) == 1:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    half = t_quantile(len(xs) - 1) * sd / math.sqrt(len(xs))
    return mean, mean - half, mean + half


def select_lr(validation: Mapping[float, tuple[float, float]], tolerance: float = 0.005) -> float:
    """The lr with the best validation score; ``validation`` maps lr -> (validation metric, validation loss).

    Scores within ``tolerance`` of the best count as tied and the lower validation loss breaks the tie (a solved
    task often ties at 1.0). NaN scores (a diverged run) never win unless every score is NaN."""
    if not validation:
        raise ValueError("no learning rate to select from")
    finite = {lr: v for lr, v in validation.items() if v[0] == v[0]}
    if not finite:
        return min(validation)
    best = max(score for score, _ in finite.values())
    tied = [lr for lr, (score, _) in finite.items() if score >= best - tolerance]
    return min(tied, key=lambda lr: (finite[lr][1] if finite[lr][1] == finite[lr][1] else math.inf, lr))


def edge_extension(grid: Sequence[float], chosen: float) -> float | None:
    """The lr one grid step beyond ``chosen`` when it is the smallest or largest of ``grid`` (>= 2 values),
    else None. The step is the grid's ratio at that edge, so {1e-3, 3e-3, 1e-2} extends to 3e-4 or 3e-2."""
    g = sorted(set(grid))
    if len(g) < 2:
        return None
    if chosen == g[0]:
        return float(f"{g[0] * g[0] / g[1]:.3g}")
    if chosen == g[-1]:
        return float(f"{g[-1] * g[-1] / g[-2]:.3g}")
    return None


def still_falling(losses: Sequence[float], window: float = 0.2, min_drop: float = 0.02) -> bool:
    """True when the mean training loss over the last ``window`` of the curve is lower than over the window
    before it by more than ``min_drop`` (relative): the run was cut by the cap, not stuck on a plateau."""
    xs = [float(x) for x in losses if x == x]
    n = max(1, int(len(xs) * window))
    if len(xs) < 2 * n or n < 1:
        return False
    before, last = sum(xs[-2 * n:-n]) / n, sum(xs[-n:]) / n
    return before - last > min_drop * max(abs(before), 1e-12)


def answer_mask(task: str, labels: Any, params: Mapping[str, Any]) -> Any:
    """Supervised positions that belong to the task's answer string: for copying (Jelassi et al. score whole
    strings) the end marker '.' is supervised but is not part of the string; for other tasks every label."""
    mask = labels != -100
    if task == "copying":
        return mask & (labels != params["vocab_size"] + 2)  # EOS id = V + 2 (ssmbench.synthetic.copying)
    return mask


def validation_scores(rows: Any, metric: str) -> dict[float, tuple[float, float]]:
    """lr -> (validation ``metric``, validation loss) from stored rows of one group's screen cases (a results
    DataFrame). Reads only the ``val_*`` rows: the test rows of those cases never reach the selection."""
    val = rows[(rows.status == "ok") & rows.metric.isin([f"val_{metric}", "val_loss"]) & (rows.stat == "value")]
    out: dict[float, tuple[float, float]] = {}
    for case_json, grp in val.groupby("case"):
        lr = float(dict(json.loads(case_json)["options"])["lr"])
        values = dict(zip(grp.metric, grp.value, strict=True))
        out[lr] = (values.get(f"val_{metric}", math.nan), values.get("val_loss", math.nan))
    return out
