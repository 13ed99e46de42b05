"""Report section: cases measured while other processes were using the CPU (see ``ssmbench/contention.py``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ssmbench.contention import CONTENDED, OTHERS_MIN_CORES


def contended_cases(df: pd.DataFrame) -> pd.DataFrame:
    """One row per contended case: label columns and the load it saw (empty if none, or no load metrics)."""
    if df.empty or "metric" not in df:
        return pd.DataFrame()
    flag = df[(df.metric == CONTENDED[0]) & (df.stat == CONTENDED[1]) & (df.value >= 1)]
    if flag.empty:
        return pd.DataFrame()
    ids = set(flag.case_id)
    load = df[df.case_id.isin(ids) & df.metric.isin(["other_cpu", "load_avg"])]
    wide = load.pivot_table(index="case_id", columns=["metric", "stat"], values="value", aggfunc="first")
    wide.columns = [f"{m}_{s}" for m, s in wide.columns]
    first = df[df.case_id.isin(ids)].drop_duplicates("case_id").set_index("case_id")
    return first[["model", "backend", "mode", "seq_len", "batch"]].join(wide).reset_index()


def contention_section(df: pd.DataFrame, out_dir: Path) -> tuple[list[str], list[Path]]:
    rows = contended_cases(df)
    if rows.empty:
        return [], []
    total = df.case_id.nunique()
    lines = ["## Contended timings", "",
             f"{len(rows)} of {total} case(s) ran while other processes used at least {OTHERS_MIN_CORES:g} CPU "
             "cores on average (very short cases: while the load average exceeded the core count): their times "
             "may be inflated. Re-run them on a quiet machine with `--force`, ideally with `--threads 1`.", "",
             "| case | other processes (cores) | load before -> after |", "|---|---:|---:|"]
    for r in rows.itertuples():
        label = f"{r.model}:{r.backend} {r.mode} L={r.seq_len} b={r.batch}"
        lines.append(f"| {label} | {getattr(r, 'other_cpu_mean', float('nan')):.2f} | "
                     f"{getattr(r, 'load_avg_before', float('nan')):.1f} -> "
                     f"{getattr(r, 'load_avg_after', float('nan')):.1f} |")
    return [*lines, ""], []
