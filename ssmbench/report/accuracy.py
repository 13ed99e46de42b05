"""The accuracy section of the report: accuracy vs length per synthetic task, as figures and Markdown tables.

Cases are grouped into *settings* (task and task parameters); one figure per setting. A line is one model (its
label names the options that tell two runs of the same family apart, e.g. ``mamba d_state=64`` or ``mamba
d_model=128``); several seeds of the same line are averaged. Two layouts:

- extrapolation (some case evaluates beyond its train length): one panel per train length, x = evaluation
  length, the train length drawn as a vertical line;
- per-length (each case evaluated only where it was trained): one panel, x = train length.

Chance (the task's format-aware guess, which can depend on length, e.g. 1/kv for MQAR) is a dashed line.

Only the cases at each protocol group's chosen lr are drawn (the lr chosen on validation rows, see
:mod:`.protocol`); the seeds there give the mean line, a 95% t-interval band and one dot per seed, for token
accuracy (top row) and sequence accuracy (bottom row). The full lr x seed grid is the sensitivity table.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd

from ssmbench.synthetic.metrics import t_interval

# Options that never tell two lines apart (they describe the evaluation, or are the grouping itself).
_NOT_LABEL = ("eval_lengths", "eval_examples", "eval_tokens", "params", "stop_at", "role", "lr", "lr_grid", "seeds",
              "metric", "threshold", "eval_every", "val_examples")


def _case_info(case_json: str) -> dict[str, Any]:
    case = json.loads(case_json)
    opts = {k: v for k, v in case.get("options", [])}
    params = {k: v for k, v in opts.get("params", [])}
    knobs = {"d_model": case["d_model"], "n_layers": case["n_layers"], **dict(case.get("model_options", [])),
             "batch": case["batch"], **{k: v for k, v in opts.items() if k not in _NOT_LABEL}}
    return {"train_len": int(case["seq_len"]), "seed": case.get("seed", 0), "knobs": knobs,
            "setting": json.dumps({"task": case["task"], "params": params}, sort_keys=True, default=str),
            "params_text": ", ".join(f"{k}={v}" for k, v in sorted(params.items()) if v is not None),
            "requested_backend": case.get("backend", "auto")}


def _labels(cases: pd.DataFrame) -> dict[str, str]:
    """case_id -> line label: the model name plus the knobs that tell apart its cases at the same train length
    (two d_state values at L=64 are two lines; more steps at L=128 than at L=64 is still one line)."""
    out: dict[str, str] = {}
    for (_, model), grp in cases.groupby(["setting", "model"]):
        keys = sorted({k for knobs in grp.knobs for k in knobs})
        varying = [k for k in keys if any(len({json.dumps(kn.get(k), default=str) for kn in same.knobs}) > 1
                                          for _, same in grp.groupby(["train_len", "seed"]))]
        backends = set(grp.requested_backend)
        for _, r in grp.iterrows():
            extra = " ".join(f"{k}={r.knobs.get(k)}" for k in varying)
            backend = f":{r.requested_backend}" if len(backends) > 1 else ""
            out[r.case_id] = f"{model}{backend}" + (f" {extra}" if extra else "")
    return out


def accuracy_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Long table, one row per (line, train length, eval length), seeds averaged. Columns: setting, task, label,
    model, backend, train_len, seq_len, accuracy, seq_accuracy, loss, chance, params, steps, train_time,
    final_train_loss, n_seeds, params_text, d_model, n_layers. Empty when there are no ok accuracy cases."""
    from ssmbench.report.protocol import summarise

    acc = df[(df.kind == "accuracy") & (df.status == "ok")]
    if acc.empty:
        return pd.DataFrame()
    chosen = {cid for ids in summarise(acc).case_ids for cid in ids}
    acc = acc[acc.case_id.isin(chosen)]  # each group at its chosen lr: the other lrs are the sensitivity table
    first = acc.drop_duplicates("case_id").set_index("case_id")
    info = pd.DataFrame([{"case_id": cid, **_case_info(cj)} for cid, cj in first.case.items()])
    info = info.merge(first[["model", "backend", "task", "d_model", "n_layers"]], left_on="case_id", right_index=True)
    info["label"] = info.case_id.map(_labels(info))

    scalars = acc[acc.stat == "value"].pivot_table(index="case_id", columns="metric", values="value", aggfunc="first")
    per_len = acc[acc.stat == "eval"].pivot_table(index=["case_id", "seq_len"], columns="metric", values="value",
                                                  aggfunc="first").reset_index()
    long = per_len.merge(info, on="case_id").merge(scalars, left_on="case_id", right_index=True, how="left")
    for col in ("accuracy", "seq_accuracy", "loss", "chance", "params", "steps", "train_time", "final_train_loss"):
        if col not in long:
            long[col] = float("nan")
    keys = ["setting", "task", "label", "model", "train_len", "seq_len", "params_text", "d_model", "n_layers"]
    out = long.groupby(keys, dropna=False).agg(
        accuracy=("accuracy", "mean"), seq_accuracy=("seq_accuracy", "mean"), loss=("loss", "mean"),
        acc_seeds=("accuracy", list), seq_seeds=("seq_accuracy", list),
        chance=("chance", "mean"), params=("params", "first"), steps=("steps", "mean"),
        train_time=("train_time", "mean"), final_train_loss=("final_train_loss", "mean"),
        n_seeds=("seed", "nunique"), backend=("backend", lambda s: "/".join(sorted(set(s))))).reset_index()
    for prefix, col in (("acc", "acc_seeds"), ("seq", "seq_seeds")):
        bounds = out[col].map(t_interval)
        out[f"{prefix}_lo"], out[f"{prefix}_hi"] = bounds.str[1], bounds.str[2]
    return out.sort_values(["task", "setting", "label", "train_len", "seq_len"]).reset_index(drop=True)


def wide_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, line, train length); a column ``acc@L`` per evaluation length."""
    if frame.empty:
        return frame
    keys = ["setting", "task", "label", "train_len"]
    scalars = frame.groupby(keys).agg(backend=("backend", "first"), params=("params", "first"),
                                      steps=("steps", "first"), train_time=("train_time", "first"),
                                      final_train_loss=("final_train_loss", "first"), n_seeds=("n_seeds", "max"))
    out = scalars
    for col, name in (("accuracy", "acc"), ("seq_accuracy", "seq"), ("acc_lo", "acclo"), ("acc_hi", "acchi"),
                      ("seq_lo", "seqlo"), ("seq_hi", "seqhi")):
        wide = frame.groupby([*keys, "seq_len"])[col].first().unstack("seq_len")
        wide.columns = [f"{name}@{c}" for c in wide.columns]
        out = out.join(wide)
    return out.reset_index()


def _extrapolates(grp: pd.DataFrame) -> bool:
    return bool((grp.seq_len != grp.train_len).any())


def plot_setting(grp: pd.DataFrame, path: Path, title: str) -> Path:
    """One figure for one setting (see the module docstring for the two layouts)."""
    from ssmbench.report.common import ATTENTION_MODELS, format_length, length_ticks, pyplot, save_figure

    plt = pyplot()

    extrapolation = _extrapolates(grp)
    panels = sorted(grp.train_len.unique()) if extrapolation else [None]
    rows = (("accuracy", "acc", "token accuracy"), ("seq_accuracy", "seq", "sequence accuracy (whole answer)"))
    fig, axes = plt.subplots(2, len(panels), figsize=(6.4 * len(panels), 8.4), squeeze=False, sharex="col")
    colors = {label: f"C{i}" for i, label in enumerate(sorted(grp.label.unique()))}
    for (col, prefix, ylabel), ax_row in zip(rows, axes, strict=True):
        for ax, train_len in zip(ax_row, panels, strict=True):
            sub = grp if train_len is None else grp[grp.train_len == train_len]
            x_col = "seq_len" if extrapolation else "train_len"
            if not extrapolation:
                sub = sub[sub.seq_len == sub.train_len]
            for label, line in sub.groupby("label"):
                line = line.sort_values(x_col)
                color = colors[label]
                marker = "s" if line.model.iloc[0] in ATTENTION_MODELS else "o"  # dashes are kept for chance
                n = int(line.n_seeds.max())
                ax.plot(line[x_col], line[col], "-", marker=marker, color=color, label=f"{label} ({n} seeds)"
                        if n > 1 else label)
                band = line[line[f"{prefix}_lo"].notna()]
                if len(band) == 1:  # one length: the 95% t-interval as a bar (a band needs two points)
                    x0 = float(band[x_col].iloc[0])
                    ax.plot([x0, x0], [max(0.0, float(band[f"{prefix}_lo"].iloc[0])),
                                       min(1.0, float(band[f"{prefix}_hi"].iloc[0]))], color=color, linewidth=8,
                            alpha=0.25, solid_capstyle="butt")
                elif len(band):  # the 95% t-interval of the mean over seeds
                    ax.fill_between(band[x_col], band[f"{prefix}_lo"].clip(0, 1), band[f"{prefix}_hi"].clip(0, 1),
                                    color=color, alpha=0.15, linewidth=0)
                for x, seeds in zip(line[x_col], line[f"{prefix}_seeds"], strict=True):
                    ax.scatter([x] * len(seeds), seeds, s=12, color=color, alpha=0.6, zorder=3, linewidths=0)
            chance = sub.groupby(x_col).chance.mean().sort_index()
            dashed = {"linestyle": (0, (4, 3)), "color": "black", "linewidth": 1.2, "label": "chance (token)"}
            if col == "accuracy" and len(chance) > 1:
                ax.plot(chance.index, chance.values, **dashed)
            elif col == "accuracy":  # a single length: a line across the panel, or it would not show
                ax.axhline(float(chance.iloc[0]), **dashed)
            if train_len is not None:
                ax.axvline(train_len, color="grey", linestyle=":", linewidth=1.5)
                ax.annotate(f"train L={format_length(train_len)}", xy=(train_len, 1.02),
                            xycoords=("data", "axes fraction"), ha="center", fontsize=8, color="dimgrey")
            ticks = sub[x_col].unique()
            ax.set_xscale("log", base=2)
            length_ticks(ax, ticks, rotation=45 if len(ticks) > 6 else 0)
            ax.set_ylim(-0.02, 1.05)
            ax.set_ylabel(ylabel)
            if col == "seq_accuracy":
                ax.set_xlabel("evaluation length" if extrapolation else "train = evaluation length (one model per "
                              "point)")
            ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle(textwrap.fill(title + " — line: mean over seeds at the chosen lr, band: 95% t-interval, dots: "
                               "seeds", 70 * len(panels)), fontsize=9)
    return save_figure(fig, path)


def _fmt(x: float, digits: int = 3) -> str:
    return "–" if pd.isna(x) else f"{x:.{digits}f}"


def _cell(r: Any, name: str, x: int, bold: bool) -> str:
    v = r.get(f"{name}@{x}", float("nan"))
    if pd.isna(v):
        return "–"
    lo, hi = r.get(f"{name}lo@{x}", float("nan")), r.get(f"{name}hi@{x}", float("nan"))
    text = f"**{v:.3f}**" if bold else f"{v:.3f}"
    return text + (f" ± {(hi - lo) / 2:.3f}" if not pd.isna(lo) else "")


def _markdown(grp: pd.DataFrame, title: str, figure: str) -> list[str]:
    from ssmbench.report.common import format_length

    wide = wide_table(grp)
    lengths = sorted(grp.seq_len.unique())
    lines = [f"### {title}", "", f"![{Path(figure).stem}]({figure})", ""]
    for name, what in (("acc", "token accuracy"), ("seq", "sequence accuracy")):
        lines += [f"| model ({what}) | backend | params | train L | steps | train time | final train loss | "
                  + " | ".join(f"L={format_length(x)}" for x in lengths) + " |",
                  "|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(lengths)]
        for _, r in wide.sort_values(["label", "train_len"]).iterrows():
            cells = [_cell(r, name, x, x == r.train_len) for x in lengths]
            lines.append(f"| {r.label} | {r.backend} | {int(r.params):,} | {format_length(r.train_len)} | "
                         f"{r.steps:.0f} | {r.train_time:.0f} s | {_fmt(r.final_train_loss)} | "
                         + " | ".join(cells) + " |")
        if name == "acc":
            chance = grp.groupby("seq_len").chance.mean()
            lines.append("| chance | | | | | | | " + " | ".join(_fmt(chance.get(x, float("nan")))
                                                               for x in lengths) + " |")
        lines.append("")
    seeds = int(wide.n_seeds.max())
    lines += ["Test rows, a fixed held-out set per length (bold: at the train length, in the training length mix); "
              + (f"mean ± 95% t-interval half-width over {seeds} seeds at the lr chosen on validation; "
                 if seeds > 1 else "one seed; ")
              + "steps and time are means over seeds. A run that fails within a CPU budget shows slow learning, "
              "not incapacity, unless the same model solves a shorter length in the same budget (docs/tasks.md).",
              ""]
    return lines


def accuracy_section(df: pd.DataFrame, out_dir: str | Path) -> tuple[list[str], list[Path]]:
    """Report section hook (ssmbench.report.build.SECTIONS): (Markdown lines, figure paths); ([], []) without
    accuracy results."""
    from ssmbench.report.protocol import plot_curves, protocol_markdown, summarise

    frame = accuracy_frame(df)
    if frame.empty:
        return [], []
    summary = summarise(df)
    out_dir = Path(out_dir)
    lines = ["## Accuracy on synthetic tasks", ""]
    figures: list[Path] = []
    for task, by_task in frame.groupby("task", sort=True):
        for k, (_, grp) in enumerate(by_task.groupby("setting", sort=True)):
            widths = "/".join(str(x) for x in sorted(grp.d_model.unique()))
            depths = "/".join(str(x) for x in sorted(grp.n_layers.unique()))
            params = grp.params_text.iloc[0]
            title = f"{task}: d_model {widths}, {depths} layers" + (f"; {params}" if params else "")
            name = f"accuracy_{task}.png" if k == 0 else f"accuracy_{task}_{k + 1}.png"
            figures.append(plot_setting(grp, out_dir / name, title))
            lines += _markdown(grp, title, name)
            mine = summary[(summary.task == task) & (summary.params_text == params)]
            if not mine.empty:
                lines += protocol_markdown(df, mine)
                curve_name = name.replace("accuracy_", "curves_")
                if any(len(df[(df.case_id.isin(ids)) & (df.stat == "curve")]) for ids in mine.case_ids):
                    figures.append(plot_curves(df, mine, out_dir / curve_name, title))
                    lines += [f"![learning curves]({curve_name})", ""]
    return lines, figures
