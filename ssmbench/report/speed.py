"""The speed section: time per sequence vs L (log-log, IQR bands, fitted exponents, crossovers), throughput, memory.

Speed figures plot *time per sequence* (batch time / batch) against L on log-log axes: with equal tokens per
batch this is the cost of one length-L sequence, so attention's slope tends to 2 and an SSM's to 1. Each line
carries its fitted exponent over the last points, shaded IQR bands, and each SSM's crossover length against the
transformer is annotated.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd

from ssmbench.report.common import (
    Crossover,
    _series_label,
    crossovers_vs_attention,
    exponent_label,
    fit_exponent,
    format_bytes,
    format_length,
    format_seconds,
    length_ticks,
    pyplot,
    readable_log_y,
    save_figure,
    series_style,
)
from ssmbench.report.searches import mark_searches, searches_for

FAIRNESS_NOTES = (
    "Same dtype and the same number of tokens per batch for every model at a length (batch = tokens // L unless "
    "set explicitly); time per sequence = batch time / batch.",
    "Each family runs on the backend named in its label: 'auto' picks the fastest available for the device; the "
    "backend that actually ran is recorded per row.",
    "Warm-up before timing; the first call (compilation, autotuning, lazy init) is recorded separately as "
    "`first_call` and never mixed into the samples.",
    "Timings are medians of >= 5 samples with the inter-quartile range; never the mean of one loop.",
    "Model sizes differ by family at equal d_model/n_layers unless `--match-params` was used; parameter counts "
    "are listed.",
    "CUDA cases whose synchronised wall time exceeds device time by 1.5x are flagged launch-bound.",
)


def speed_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per ok speed case (fwd/fwdbwd) with median/q25/q75 time, tokens/s, memory and per-sequence time."""
    model_scope = df.scope != "kernel" if "scope" in df else True  # kernel benchmarks have their own section
    speed = df[(df.kind == "speed") & (df.status == "ok") & df["mode"].isin(["fwd", "fwdbwd"]) & model_scope]
    if speed.empty:
        return pd.DataFrame()
    keys = ["case_id", "model", "backend", "mode", "device", "dtype", "batch", "seq_len", "d_model", "n_layers",
            "params", "built_d_model"]
    # Figures group by the *requested* width: with --match-params each family is built at its own d_model
    # (recorded in built_d_model) but belongs on the same plot as the transformer it was matched to.
    requested = speed["case"].map(lambda text: json.loads(text)["d_model"])
    speed = speed.assign(col=speed.metric + ":" + speed.stat, built_d_model=speed.d_model, d_model=requested)
    wide = speed.pivot_table(index=keys, columns="col", values="value", aggfunc="first", dropna=False)
    wide = wide.reset_index().dropna(subset=["time:median"])
    for stat in ("median", "q25", "q75"):
        wide[f"seq_time_{stat}"] = wide[f"time:{stat}"] / wide["batch"]
    return wide.sort_values(["mode", "model", "seq_len"]).reset_index(drop=True)


def _figure_groups(table: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    return list(table.groupby(["mode", "device", "dtype", "d_model", "n_layers"], sort=True))


def analyse(table: pd.DataFrame) -> tuple[dict[str, float], list[Crossover]]:
    exponents: dict[str, float] = {}
    crossovers: list[Crossover] = []
    for (mode, device, dtype, d_model, n_layers), grp in _figure_groups(table):
        prefix = f"{mode} {device} {dtype} d{d_model}x{n_layers}"
        series = {(m, b): g.sort_values("seq_len") for (m, b), g in grp.groupby(["model", "backend"])}
        for (m, b), g in series.items():
            exponents[f"{prefix} {_series_label(m, b)}"] = fit_exponent(g.seq_len, g.seq_time_median)
        crossovers += crossovers_vs_attention(series, "seq_time_median",
                                              lambda m, b, p=prefix: f"{p} {_series_label(m, b)}")
    return exponents, crossovers


def plot_speed(table: pd.DataFrame, out_dir: Path, exponents: dict[str, float],
               crossovers: list[Crossover], searches: list[dict] | None = None) -> list[Path]:
    plt = pyplot()
    paths = []
    for (mode, device, dtype, d_model, n_layers), grp in _figure_groups(table):
        prefix = f"{mode} {device} {dtype} d{d_model}x{n_layers}"
        fig, (ax_t, ax_tp, ax_m) = plt.subplots(1, 3, figsize=(17, 5.2))
        for (m, b), g in grp.groupby(["model", "backend"]):
            # several cases at one length (repeated crossover searches, batches): one point, their median
            g = g.groupby("seq_len", as_index=False).median(numeric_only=True).sort_values("seq_len")
            label = _series_label(m, b)
            alpha = exponents.get(f"{prefix} {label}", float("nan"))
            style = series_style(grp.model.tolist(), m, b)
            ax_t.plot(g.seq_len, g.seq_time_median * 1e3, **style, label=f"{label}{exponent_label(alpha)}")
            ax_t.fill_between(g.seq_len, g.seq_time_q25 * 1e3, g.seq_time_q75 * 1e3, alpha=0.2, color=style["color"])
            ax_tp.plot(g.seq_len, g["tokens_per_s:median"], **style, label=label)
            if "peak_mem_delta:max" in g:
                mem = g[g["peak_mem_delta:max"] > 0]  # a zero (all pages already resident) has no log position
                ax_m.plot(mem.seq_len, mem["peak_mem_delta:max"] / 2**20, **style, label=label)
        for c in crossovers:
            if c.ssm.startswith(prefix) and c.relation == "at" and c.length is not None:
                ax_t.axvline(c.length, color="grey", linestyle=":", linewidth=1)
                ax_t.annotate(f"{c.ssm[len(prefix) + 1:].split(' ')[0]} faster\nfrom L≈{format_length(c.length)}",
                              xy=(c.length, 0.02), xycoords=("data", "axes fraction"), xytext=(3, 0),
                              textcoords="offset points", fontsize=8, color="dimgrey", rotation=90,
                              va="bottom")
        mark_searches(ax_t, searches_for(searches or [], (mode, device, dtype, d_model, n_layers)))
        batch_note = ", ".join(sorted({f"{t}" for t in (grp.batch * grp.seq_len).unique()}))
        ax_t.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel="time per sequence (ms)",
                 title=f"{mode}: time per sequence (median, IQR band)")
        ax_tp.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel="tokens / s",
                  title="throughput")
        ax_m.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel="peak memory of the call (MiB)",
                 title="peak memory (over what was allocated before)")
        for ax in (ax_t, ax_tp, ax_m):
            length_ticks(ax, grp.seq_len)
            readable_log_y(ax)
            ax.grid(True, which="major", alpha=0.3)
        ax_t.legend(fontsize=8)
        fig.suptitle(f"ssmbench {mode} on {device} ({dtype}), d_model={d_model}, n_layers={n_layers}, "
                     f"tokens per batch {batch_note}", fontsize=11)
        paths.append(save_figure(fig, out_dir / f"speed_{mode}_{device}_{dtype}_d{d_model}_l{n_layers}.png"))
    return paths


def _speed_markdown(table: pd.DataFrame, exponents: dict[str, float], crossovers: list[Crossover],
                    figures: list[Path], out_dir: Path) -> list[str]:
    lines = ["## Speed and memory", ""]
    for p in figures:
        lines += [f"![{p.stem}]({p.relative_to(out_dir)})", ""]
    for (mode, device, dtype, d_model, n_layers), grp in _figure_groups(table):
        lines += [f"### {mode} — {device}, {dtype}, d_model {d_model}, {n_layers} layers", ""]
        lengths = sorted(grp.seq_len.unique())
        lines.append("| model (backend) | params | " + " | ".join(f"L={format_length(x)}" for x in lengths)
                     + " | exponent (last 3) |")
        lines.append("|---|---:|" + "---:|" * len(lengths) + "---:|")
        prefix = f"{mode} {device} {dtype} d{d_model}x{n_layers}"
        for (m, b), g in grp.groupby(["model", "backend"]):
            by_len = dict(zip(g.seq_len, g.seq_time_median, strict=True))
            cells = [format_seconds(by_len.get(x, float("nan"))) for x in lengths]
            alpha = exponents.get(f"{prefix} {_series_label(m, b)}", float("nan"))
            params = f"{int(g.params.iloc[0]):,}" if pd.notna(g.params.iloc[0]) else "–"
            lines.append(f"| {_series_label(m, b)} | {params} | " + " | ".join(cells)
                         + f" | {alpha:.2f} |")
        lines += ["", "Time per sequence (median). Tokens/s and peak memory per case:", ""]
        lines.append("| model (backend) | L | batch | tokens/s | GFLOP/s (analytic FLOPs) | peak memory of the call |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for _, r in grp.sort_values(["model", "seq_len"]).iterrows():
            mem = r.get("peak_mem_delta:max", float("nan"))
            gflops = r.get("achieved_flops:median", float("nan")) / 1e9
            lines.append(f"| {_series_label(r.model, r.backend)} | {format_length(r.seq_len)} | {r.batch} | "
                         f"{r['tokens_per_s:median']:,.0f} | {gflops:,.1f} | {format_bytes(mem)} |")
        lines.append("")
        for c in crossovers:
            if c.ssm.startswith(prefix):
                lines.append(f"- Crossover: {c.describe()[len(prefix) + 1:]}")
        lines += [*_noise_notes(grp), ""]
    return lines


# A case is called noisy when its IQR exceeds this share of its median, and a series implausible when its time per
# sequence *falls* by more than this share from one length to the next (equal tokens per batch: it should rise).
NOISY_IQR = 0.25
IMPLAUSIBLE_DROP = 0.2


def _noise_notes(grp: pd.DataFrame) -> list[str]:
    """Warnings a reader needs before trusting exponents and crossovers: noisy cases and series that get faster
    per sequence as L grows (a busy machine, usually; both symptoms showed on a 2-core machine shared by other jobs)."""
    noisy = grp[(grp["time:q75"] - grp["time:q25"]) > NOISY_IQR * grp["time:median"]]
    drops = []
    for (m, b), g in grp.groupby(["model", "backend"]):
        g = g.sort_values("seq_len")
        for (l0, t0), (l1, t1) in itertools.pairwise(zip(g.seq_len, g.seq_time_median, strict=True)):
            if t1 < (1 - IMPLAUSIBLE_DROP) * t0:
                drops.append(f"{_series_label(m, b)} L={format_length(l0)}→{format_length(l1)}")
    if noisy.empty and not drops:
        return []
    parts = []
    if not noisy.empty:
        parts.append(f"{len(noisy)} of {len(grp)} cases have an IQR above {NOISY_IQR:.0%} of their median")
    if drops:
        shown = ", ".join(drops[:4]) + (f" and {len(drops) - 4} more" if len(drops) > 4 else "")
        parts.append(f"time per sequence falls as L grows in {shown}")
    return [f"- ⚠️ Noisy measurements: {'; '.join(parts)}. Exponents and crossovers from these are unreliable; "
            "re-measure on a quiet machine or with `--threads 1` (add `--force` to replace the stored cases)."]
