"""The roofline section: arithmetic intensity vs achieved FLOP/s per speed case, under this machine's two ceilings.

Each case's analytic FLOPs and bytes moved (``bench/cost.py``) give its arithmetic intensity I = FLOPs / bytes;
its median time gives achieved FLOP/s and GB/s. The ceilings are the attained peaks recorded with the run
(``bench/peaks.py``: a float32 matmul and a streaming add at the run's thread count): a case with I below the
ridge (peak FLOP/s / peak bandwidth) is bound by memory bandwidth, above it by compute; "% of roof" is achieved
FLOP/s over min(peak FLOP/s, I x peak bandwidth).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ssmbench.report.common import _series_label, format_length, pyplot, save_figure


def attach_peaks(df: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """``peak_flops`` and ``peak_bandwidth`` columns on every row, from the run that measured it (NaN if none)."""
    if runs.empty or "peak_flops" not in runs:
        return df.assign(peak_flops=np.nan, peak_bandwidth=np.nan)
    peaks = runs[["run_id", "peak_flops", "peak_bandwidth"]].dropna().drop_duplicates("run_id")
    peaks = peaks.astype({"peak_flops": float, "peak_bandwidth": float})
    return df.merge(peaks, on="run_id", how="left")


def roofline_table(df: pd.DataFrame) -> pd.DataFrame:
    if "peak_flops" not in df:
        return pd.DataFrame()
    speed = df[(df.kind == "speed") & (df.status == "ok") & df.metric.isin(["flops", "bytes", "time"])
               & df.stat.isin(["value", "median"])]
    if speed.empty:
        return pd.DataFrame()
    keys = ["case_id", "model", "backend", "mode", "device", "dtype", "batch", "seq_len", "peak_flops",
            "peak_bandwidth"]
    wide = speed.pivot_table(index=keys, columns="metric", values="value", aggfunc="first").reset_index()
    if not {"flops", "bytes", "time"} <= set(wide.columns):
        return pd.DataFrame()
    wide = wide.dropna(subset=["flops", "bytes", "time", "peak_flops", "peak_bandwidth"])
    if wide.empty:
        return wide
    wide["intensity"] = wide.flops / wide["bytes"]
    wide["achieved_flops"] = wide.flops / wide.time
    wide["achieved_bandwidth"] = wide["bytes"] / wide.time
    wide["pct_flops"] = 100 * wide.achieved_flops / wide.peak_flops
    wide["pct_bandwidth"] = 100 * wide.achieved_bandwidth / wide.peak_bandwidth
    roof = np.minimum(wide.peak_flops, wide.intensity * wide.peak_bandwidth)
    wide["pct_roof"] = 100 * wide.achieved_flops / roof
    wide["binding"] = np.where(wide.intensity < wide.peak_flops / wide.peak_bandwidth, "memory", "compute")
    return wide.sort_values(["device", "dtype", "mode", "model", "seq_len"]).reset_index(drop=True)


def plot_roofline(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    plt = pyplot()
    paths = []
    markers = {"fwd": "o", "fwdbwd": "s"}
    for (device, dtype), grp in table.groupby(["device", "dtype"]):
        peak_f, peak_b = grp.peak_flops.median(), grp.peak_bandwidth.median()
        fig, ax = plt.subplots(figsize=(9, 6))
        ridge = peak_f / peak_b
        lo, hi = min(grp.intensity.min() / 2, ridge / 8), max(grp.intensity.max() * 2, ridge * 4)
        y_lo = min(grp.achieved_flops.min() / 2, lo * peak_b) / 1e9
        ax.set(xlim=(lo, hi), ylim=(y_lo, peak_f / 1e9 * 2.5), xscale="log", yscale="log")
        xs = np.geomspace(lo, hi, 200)
        ax.plot(xs, np.minimum(peak_f, xs * peak_b) / 1e9, color="black", linewidth=2)
        ax.axvline(ridge, color="grey", linestyle=":", linewidth=1)
        ax.text(hi / 1.2, peak_f / 1e9 * 1.12, f"compute ceiling {peak_f / 1e9:.1f} GFLOP/s (matmul)", fontsize=9,
                ha="right", va="bottom")
        ax.text(ridge * 1.05, y_lo * 1.15, f"ridge {ridge:.1f} FLOP/B", fontsize=8, color="grey")
        # the bandwidth label along its slope, rotated to the line as drawn
        x0, x1 = lo * 1.3, lo * 2.6
        (p0, p1) = ax.transData.transform([(x0, x0 * peak_b / 1e9), (x1, x1 * peak_b / 1e9)])
        angle = float(np.degrees(np.arctan2(p1[1] - p0[1], p1[0] - p0[0])))
        ax.text(x0, x0 * peak_b / 1e9 * 1.25, f"bandwidth {peak_b / 1e9:.1f} GB/s (streaming add)", fontsize=9,
                rotation=angle, rotation_mode="anchor", va="bottom")
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, ((m, b), g) in enumerate(grp.groupby(["model", "backend"])):
            for mode, gm in g.groupby("mode"):
                ax.scatter(gm.intensity, gm.achieved_flops / 1e9, color=colors[i % len(colors)],
                           marker=markers.get(mode, "^"), s=40, label=f"{_series_label(m, b)} {mode}")
                for _, r in gm.iloc[[0, -1]].iterrows():
                    ax.annotate(format_length(r.seq_len), (r.intensity, r.achieved_flops / 1e9), fontsize=7,
                                xytext=(3, 3), textcoords="offset points", color=colors[i % len(colors)])
        ax.set(xlabel="arithmetic intensity (FLOP / byte, analytic)",
               ylabel="achieved GFLOP/s (analytic FLOPs / median time)",
               title=f"roofline on {device} ({dtype}): one point per case, labels = L")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        paths.append(save_figure(fig, out_dir / f"roofline_{device}_{dtype}.png"))
    return paths


_ENERGY = {("energy_per_token", "value"): ("J/token", "{:.3g}"), ("power", "mean"): ("avg W", "{:.0f}"),
           ("sm_clock", "median"): ("SM MHz", "{:.0f}"), ("temperature", "max"): ("max °C", "{:.0f}"),
           ("nvml_memory_used", "max"): ("NVML mem used (GiB)", "{:.2f}")}


def energy_lines(df: pd.DataFrame) -> list[str]:
    """CUDA cases sampled through NVML: energy per token, average power, SM clock, temperature, memory used."""
    rows = df[(df.status == "ok") & pd.Series(list(zip(df.metric, df.stat, strict=True)), index=df.index)
              .isin(list(_ENERGY))]
    if rows.empty:
        return []
    wide = rows.assign(col=rows.metric + ":" + rows.stat).pivot_table(
        index=["model", "backend", "mode", "seq_len", "batch"], columns="col", values="value", aggfunc="first")
    cols = [(f"{m}:{s}", label, fmt) for (m, s), (label, fmt) in _ENERGY.items() if f"{m}:{s}" in wide]
    lines = ["### Energy (NVML, sampled during the timed calls)", "",
             "| model (backend) | mode | L | batch | " + " | ".join(c[1] for c in cols) + " |",
             "|---|---|---:|---:|" + "---:|" * len(cols)]
    for (m, b, mode, length, batch), r in wide.reset_index().set_index(
            ["model", "backend", "mode", "seq_len", "batch"]).iterrows():
        cells = [fmt.format(r[c] / (2**30 if "memory" in c else 1)) if pd.notna(r[c]) else "–" for c, _, fmt in cols]
        lines.append(f"| {_series_label(m, b)} | {mode} | {format_length(length)} | {batch} | " + " | ".join(cells)
                     + " |")
    return [*lines, ""]


def roofline_section(df: pd.DataFrame, out_dir: Path) -> tuple[list[str], list[Path]]:
    table = roofline_table(df)
    energy = energy_lines(df)
    if table.empty:
        return (["## Energy", "", *energy[2:]] if energy else []), []
    figures = plot_roofline(table, out_dir)
    lines = ["## Roofline", "", "Analytic FLOPs and bytes moved per case (docs/harness.md §1.6) against this "
             "machine's attained peaks recorded with the run (a float32 matmul and a streaming add at the run's "
             "thread count). Binding ceiling: memory when the case's arithmetic intensity is below the ridge.", ""]
    lines += [f"![{p.stem}]({p.relative_to(out_dir)})" for p in figures] + [""]
    for (device, dtype), grp in table.groupby(["device", "dtype"]):
        pf, pb = grp.peak_flops.median(), grp.peak_bandwidth.median()
        lines += [f"Peaks on {device} ({dtype}): {pf / 1e9:.1f} GFLOP/s, {pb / 1e9:.1f} GB/s, ridge "
                  f"{pf / pb:.1f} FLOP/byte.", "",
                  "| model (backend) | mode | L | batch | FLOP/byte | GFLOP/s | % peak FLOP/s | GB/s | % peak GB/s | "
                  "binding | % of roof |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
        for _, r in grp.iterrows():
            lines.append(f"| {_series_label(r.model, r.backend)} | {r['mode']} | {format_length(r.seq_len)} | "
                         f"{r.batch} | {r.intensity:.1f} | {r.achieved_flops / 1e9:.2f} | {r.pct_flops:.1f}% | "
                         f"{r.achieved_bandwidth / 1e9:.2f} | {r.pct_bandwidth:.1f}% | {r.binding} | "
                         f"{r.pct_roof:.1f}% |")
        lines.append("")
    return lines + energy, figures
