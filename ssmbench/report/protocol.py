"""Accuracy-protocol summaries from stored rows: chosen lr, seeds with t-intervals, thresholds, budget labels.

Used by the CLI summary (``ssmbench accuracy`` / ``run``), the accuracy section and the claims section. A *group*
is one model in one task setting (:func:`ssmbench.synthetic.metrics.protocol_key`). The chosen lr is the one its
"seed" cases ran at (planned from validation rows between phases); a group without seed cases yet (seeds = 1, or
an interrupted run) applies the same validation-only rule to its screen rows. Reported numbers are test rows.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from ssmbench.case import protocol_key
from ssmbench.synthetic.metrics import select_lr, t_interval, validation_scores


def case_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per ok accuracy case: case_id, group, task, model, d_model, train_len, lr, role, seed, metric,
    threshold, steps (cap), params_text, setting, and its scalar metrics (steps_done, reached, ...)."""
    acc = df[(df.kind == "accuracy") & (df.status == "ok")]
    if acc.empty:
        return pd.DataFrame()
    rows = []
    for cid, cj in acc.drop_duplicates("case_id").set_index("case_id").case.items():
        case = json.loads(cj)
        opts = {k: v for k, v in case.get("options", [])}
        params = {k: v for k, v in opts.get("params", [])}
        rows.append({"case_id": cid, "group": protocol_key(case), "task": case["task"], "model": case["model"],
                     "d_model": case["d_model"], "train_len": int(case["seq_len"]), "lr": float(opts["lr"]),
                     "role": opts.get("role", "screen"), "seed": int(case.get("seed", 0)),
                     "metric": opts.get("metric", "accuracy"), "threshold": float(opts.get("threshold", 0.9)),
                     "cap": int(opts["steps"]), "grid": tuple(opts.get("lr_grid", (opts["lr"],))),
                     "setting": json.dumps({"task": case["task"], "params": params, "L": case["seq_len"]},
                                           sort_keys=True, default=str),
                     "params_text": ", ".join(f"{k}={v}" for k, v in sorted(params.items()) if v is not None)})
    info = pd.DataFrame(rows)
    scalars = acc[acc.stat == "value"].pivot_table(index="case_id", columns="metric", values="value",
                                                   aggfunc="first")
    for col in ("steps", "reached", "still_falling", "steps_to_threshold", "train_time", "params"):
        if col not in scalars:
            scalars[col] = math.nan
    info = info.merge(scalars, left_on="case_id", right_index=True, how="left")
    multi = info.groupby(["setting", "model"]).d_model.transform("nunique") > 1
    info["label"] = info.model + multi.map({True: " d=", False: ""}) + info.d_model.astype(str).where(multi, "")
    return info


def test_value(df: pd.DataFrame, case_id: str, metric: str, seq_len: int | None = None) -> float:
    """A case's test number: in distribution at the train length (seq_len None), else at ``seq_len``."""
    stat = "train_len" if seq_len is None else "eval"
    sel = df[(df.case_id == case_id) & (df.metric == metric) & (df.stat == stat)]
    if seq_len is not None:
        sel = sel[sel.seq_len == seq_len]
    return float(sel.value.iloc[0]) if len(sel) else math.nan


def chosen_lr(cases: pd.DataFrame, df: pd.DataFrame) -> float:
    """The group's chosen lr: its seed cases' lr, else the validation-only rule on its screen rows."""
    seeded = cases[cases.role == "seed"]
    if len(seeded):
        return float(seeded.lr.iloc[0])
    screen = df[df.case_id.isin(cases[cases.role == "screen"].case_id)]
    scores = validation_scores(screen, cases.metric.iloc[0])
    return select_lr(scores) if scores else float(min(cases.lr))  # rows from before validation existed


def budget_label(at_lr: pd.DataFrame) -> str:
    """solved (every seed reached the threshold) / not solved within budget (a seed that did not was still
    improving at the cap) / not solved (every such seed had plateaued)."""
    n, k = len(at_lr), int(at_lr.reached.fillna(0).sum())
    if k == n:
        return "solved"
    missed = at_lr[at_lr.reached.fillna(0) < 1]
    if (missed.still_falling.fillna(0) > 0).any():
        return "not solved within budget"
    return "not solved (plateau)" if k == 0 else f"partly solved ({k}/{n})"


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """One row per protocol group: label, task, train_len, metric, lr (chosen), n, values (per-seed headline),
    mean/lo/hi of the headline and of token (acc_*) and sequence (seq_*) accuracy, reached (k), steps_to (median
    over seeds that reached), train_time (mean s), cap, budget, case_ids at the chosen lr."""
    cases = case_table(df)
    if cases.empty:
        return pd.DataFrame()
    out = []
    for group, grp in cases.groupby("group", sort=False):
        lr = chosen_lr(grp, df)
        at = grp[grp.lr == lr].sort_values("seed")
        metric = grp.metric.iloc[0]
        row: dict[str, Any] = {k: grp[k].iloc[0] for k in ("label", "task", "model", "d_model", "train_len",
                                                             "setting", "params_text", "metric", "threshold",
                                                             "cap", "grid")}
        values = {m: [test_value(df, cid, m) for cid in at.case_id] for m in ("accuracy", "seq_accuracy")}
        for prefix, m in (("", metric), ("acc_", "accuracy"), ("seq_", "seq_accuracy")):
            mean, lo, hi = t_interval(values[m])
            row.update({f"{prefix}mean": mean, f"{prefix}lo": lo, f"{prefix}hi": hi})
        reached = at[at.reached.fillna(0) > 0]
        row.update(group=group, lr=lr, n=len(at), values=values[metric], seeds=list(at.seed),
                   reached=len(reached), steps_to=float(reached.steps_to_threshold.median()) if len(reached)
                   else math.nan, train_time=float(at.train_time.mean()), params=float(at.params.iloc[0]),
                   budget=budget_label(at), case_ids=list(at.case_id), extended=bool(set(grp.lr) - set(row["grid"])))
        out.append(row)
    return pd.DataFrame(out).sort_values(["task", "setting", "label"]).reset_index(drop=True)


def sensitivity(df: pd.DataFrame, group: str) -> pd.DataFrame:
    """The group's lr x seed table: validation and test headline per case (lr sensitivity is itself a finding)."""
    cases = case_table(df)
    grp = cases[cases.group == group]
    metric = grp.metric.iloc[0]
    def val(cid: str) -> float:
        sel = df[(df.case_id == cid) & (df.metric == f"val_{metric}")]
        return float(sel.value.iloc[0]) if len(sel) else math.nan

    rows = [{"lr": r.lr, "seed": r.seed, "role": r.role, "val": val(r.case_id),
             "test": test_value(df, r.case_id, metric), "steps": r.steps} for r in grp.itertuples()]
    return pd.DataFrame(rows).sort_values(["lr", "seed"]).reset_index(drop=True)


def format_interval(mean: float, lo: float, hi: float) -> str:
    if mean != mean:
        return "–"
    if lo != lo:
        return f"{mean:.3f} (1 seed)"
    return f"{mean:.3f} ± {(hi - lo) / 2:.3f}"


def curves(df: pd.DataFrame, case_id: str) -> dict[str, tuple[float, ...]]:
    """A case's stored learning curve: step, time, val_accuracy, val_seq_accuracy, val_loss, train_loss."""
    rows = df[(df.case_id == case_id) & (df.stat == "curve")]
    return {m.removeprefix("curve_"): tuple(v) for m, v in zip(rows.metric, rows.samples, strict=True)
            if v is not None}


def plot_curves(df: pd.DataFrame, summary: pd.DataFrame, path: Any, title: str) -> Any:
    """Validation headline vs step (equal steps) and vs training seconds (equal time), one line per seed at
    each group's chosen lr."""
    from ssmbench.report.common import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for i, r in enumerate(summary.itertuples()):
        for k, cid in enumerate(r.case_ids):
            c = curves(df, cid)
            if not c.get("step"):
                continue
            ys = c.get(f"val_{r.metric}", ())
            label = f"{r.label} L={r.train_len} lr={r.lr:g}" if k == 0 else None
            axes[0].plot(c["step"], ys, color=f"C{i}", alpha=0.8, linewidth=1.2, label=label)
            axes[1].plot(c["time"], ys, color=f"C{i}", alpha=0.8, linewidth=1.2)
    metric = summary.metric.iloc[0]
    for ax, xlabel in zip(axes, ("training step", "training time (s, validation excluded)"), strict=True):
        ax.axhline(float(summary.threshold.iloc[0]), color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel=xlabel, ylim=(-0.02, 1.05))
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(f"validation {'sequence' if metric == 'seq_accuracy' else 'token'} accuracy")
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(f"{title} — learning curves (one line per seed; dotted: threshold)", fontsize=9)
    return save_figure(fig, path)


def protocol_markdown(df: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """The protocol table (chosen lr, intervals, per-seed values, threshold, steps, time, budget) and the full
    lr x seed sensitivity table of each group."""
    if summary.empty:
        return []
    lines = ["| model | train L | lr (grid) | headline | per seed | token acc | seq acc | reached | steps to "
             "threshold | train time | budget |", "|---|---:|---|---|---|---|---|---:|---:|---:|---|"]
    for r in summary.itertuples():
        grid = ", ".join(f"{x:g}" for x in r.grid)
        lines.append(f"| {r.label} | {r.train_len} | **{r.lr:g}** ({grid}{'; extended' if r.extended else ''}) | "
                     f"{r.metric} {format_interval(r.mean, r.lo, r.hi)} | {' '.join(f'{v:.3f}' for v in r.values)} | "
                     f"{format_interval(r.acc_mean, r.acc_lo, r.acc_hi)} | "
                     f"{format_interval(r.seq_mean, r.seq_lo, r.seq_hi)} | {r.reached}/{r.n} ≥ {r.threshold:g} | "
                     f"{'–' if r.steps_to != r.steps_to else f'{r.steps_to:.0f}'} of {r.cap} | "
                     f"{r.train_time:.0f} s | {r.budget} |")
    lines += ["", "Sensitivity (every lr x seed that ran; validation chose the lr, test rows are reported):", "",
              "| model | train L | lr | seed | role | validation | test | steps |",
              "|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in summary.itertuples():
        for s in sensitivity(df, r.group).itertuples():
            lines.append(f"| {r.label} | {r.train_len} | {s.lr:g}{' ✓' if s.lr == r.lr else ''} | {s.seed} | "
                         f"{s.role} | {s.val:.3f} | {s.test:.3f} | {s.steps:.0f} |")
    return [*lines, ""]
