"""Report section for inference results (modes ``decode`` and ``prefill``; see ``ssmbench/bench/decode.py``).

Adds, per (device, dtype, d_model, n_layers):
- a figure: per-token decode latency (p50, p90 band) vs context L on log-log axes — flat for a recurrent SSM,
  rising for attention, whose step reads a KV cache of L positions — and cache/state bytes vs L;
- the context length beyond which each SSM decodes faster than the transformer (``report.common.find_crossover``, per
  batch size and CUDA-graph setting), the fitted exponent of latency vs L (``report.common.fit_exponent``);
- tables: latency vs context, cache/state size vs context, and generation throughput (tokens/s, p50/p90/p99,
  TTFT, prefill time, step overhead).
Registered in ``report.build.SECTIONS`` as ``ssmbench.report.decode:decode_section``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ssmbench.report.common import (
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

GROUP = ["device", "dtype", "d_model", "n_layers"]
SERIES = ["model", "backend", "batch", "graphs"]
# A CPU step whose matmuls take less than this share of its time is flagged overhead-bound in the report.
OVERHEAD_BOUND = 0.5


def _wide(df: pd.DataFrame, mode: str) -> pd.DataFrame:
    rows = df[(df.kind == "speed") & (df.status == "ok") & (df["mode"] == mode)]
    if rows.empty:
        return pd.DataFrame()
    keys = ["case_id", "model", "backend", "device", "dtype", "batch", "seq_len", "d_model", "n_layers", "params"]
    rows = rows.assign(col=rows.metric + ":" + rows.stat)
    # groupby/unstack, not pivot_table(dropna=False): that one builds the cartesian product of the keys
    wide = rows.groupby([*keys, "col"], dropna=False, sort=False).value.first().unstack("col").reset_index()
    return wide.sort_values(["model", "batch", "seq_len"]).reset_index(drop=True)


def decode_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per ok decode case with its metrics as ``metric:stat`` columns and a ``graphs`` flag column."""
    wide = _wide(df, "decode")
    if wide.empty or "token_latency:p50" not in wide:
        return pd.DataFrame()
    wide = wide.dropna(subset=["token_latency:p50"])
    graphs = wide["cuda_graphs:value"] if "cuda_graphs:value" in wide else pd.Series(0.0, index=wide.index)
    wide["graphs"] = graphs.fillna(0).astype(bool)
    return wide


def _exp(alpha: float) -> str:
    return f"{alpha:.2f}".replace("-0.00", "0.00")  # a flat fit can come out as -1e-17


def _label(model: str, backend: str, batch: int, graphs: bool) -> str:
    return f"{model} ({backend}) b={batch}" + (" graphs" if graphs else "")


def decode_crossovers(table: pd.DataFrame) -> list[tuple[tuple, str]]:
    """((device, dtype, d_model, n_layers), description) for each SSM vs attention pair at equal batch/graphs."""
    out = []
    for key, grp in table.groupby(GROUP, sort=True):
        for (batch, graphs), sub in grp.groupby(["batch", "graphs"], sort=True):
            series = {(m, b): g.sort_values("seq_len") for (m, b), g in sub.groupby(["model", "backend"])}
            label = lambda m, b, k=batch, cg=graphs: _label(m, b, k, cg)  # noqa: E731
            for c in crossovers_vs_attention(series, "token_latency:p50", label):
                text = c.describe().replace(" is faster than", " decodes faster than").replace(
                    " is slower than", " decodes slower than")
                out.append((key, text + (" (context L)" if c.relation == "at" else "")))
    return out


def plot_decode(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    plt = pyplot()
    paths = []
    for (device, dtype, d_model, n_layers), grp in table.groupby(GROUP, sort=True):
        fig, (ax_l, ax_s) = plt.subplots(1, 2, figsize=(13, 5))
        for (m, b, batch, graphs), g in grp.groupby(SERIES, sort=True):
            g = g.sort_values("seq_len")
            style = series_style(grp.model.tolist(), m, b)
            alpha = fit_exponent(g.seq_len, g["token_latency:p50"])
            ax_l.plot(g.seq_len, g["token_latency:p50"] * 1e3, **style,
                      label=f"{_label(m, b, batch, graphs)}{exponent_label(alpha)}")
            ax_l.fill_between(g.seq_len, g["token_latency:p50"] * 1e3, g["token_latency:p90"] * 1e3, alpha=0.15,
                              color=style["color"])
            ax_s.plot(g.seq_len, g["state_bytes:value"] / 2**20, **style, label=_label(m, b, batch, graphs))
        ax_l.set(xscale="log", yscale="log", xlabel="context length L", ylabel="per-token latency (ms)",
                 title="decode: per-token latency (p50, band to p90)")
        ax_s.set(xscale="log", yscale="log", xlabel="context length L", ylabel="MiB",
                 title="KV cache (attention) vs recurrent state (SSM)")
        for ax in (ax_l, ax_s):
            length_ticks(ax, grp.seq_len)
            readable_log_y(ax)
            ax.grid(True, which="major", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"ssmbench decode on {device} ({dtype}), d_model={d_model}, n_layers={n_layers}", fontsize=11)
        paths.append(save_figure(fig, out_dir / f"decode_{device}_{dtype}_d{d_model}_l{n_layers}.png"))
    return paths


def _grid(grp: pd.DataFrame, column: str, fmt) -> list[str]:
    """A model x context table of one column."""
    lengths = sorted(grp.seq_len.unique())
    lines = ["| model (backend) | " + " | ".join(f"L={format_length(x)}" for x in lengths) + " |",
             "|---|" + "---:|" * len(lengths)]
    for (m, b, batch, graphs), g in grp.groupby(SERIES, sort=True):
        by_len = dict(zip(g.seq_len, g[column], strict=True))
        lines.append(f"| {_label(m, b, batch, graphs)} | "
                     + " | ".join(fmt(by_len.get(x, float("nan"))) for x in lengths) + " |")
    return [*lines, ""]


_CASE_KEYS = ["model", "backend", "device", "dtype", "d_model", "n_layers", "batch", "seq_len"]


def _throughput(grp: pd.DataFrame, prefill: pd.DataFrame) -> list[str]:
    """Generation throughput per decode case, with the matching prefill case's median time where one exists."""
    if not prefill.empty and "time:median" in prefill:
        pre = prefill[[*_CASE_KEYS, "time:median"]].rename(columns={"time:median": "prefill_median"})
        grp = grp.merge(pre.drop_duplicates(_CASE_KEYS), on=_CASE_KEYS, how="left")
    else:
        grp = grp.assign(prefill_median=float("nan"))
    lines = ["| model (backend) | batch | L | tokens/s | p50 | p90 | p99 | TTFT | prefill (median) | state | "
             "step overhead |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for _, r in grp.sort_values(["model", "batch", "seq_len"]).iterrows():
        overhead = r.get("step_overhead_fraction:value", float("nan"))
        over = "–" if pd.isna(overhead) else f"{overhead:.0%}"
        lines.append(f"| {r['model']} ({r['backend']}){' graphs' if r['graphs'] else ''} | {r['batch']} | "
                     f"{format_length(r['seq_len'])} | {r['tokens_per_s:median']:,.0f} | "
                     f"{format_seconds(r['token_latency:p50'])} | {format_seconds(r['token_latency:p90'])} | "
                     f"{format_seconds(r['token_latency:p99'])} | {format_seconds(r['ttft:value'])} | "
                     f"{format_seconds(r['prefill_median'])} | {format_bytes(r['state_bytes:value'])} | {over} |")
    return [*lines, ""]


def decode_section(df: pd.DataFrame, out_dir: Path) -> tuple[list[str], list[Path]]:
    """Markdown lines and figure paths for the decode results in ``df`` (nothing if there are none)."""
    table = decode_table(df)
    if table.empty:
        return [], []
    prefill = _wide(df, "prefill")
    out_dir = Path(out_dir)
    figures = plot_decode(table, out_dir)
    crossovers = decode_crossovers(table)
    lines = ["## Decode: per-token latency vs context, KV cache vs recurrent state", "",
             "Each case prefills a random prompt of L tokens, then times K greedy tokens one step at a time "
             "(rounds rewound to context L; per-token p50/p90/p99). Attention reads a KV cache that grows with L; "
             "an SSM updates a fixed-size state. tokens/s = batch x K / wall time of a round; TTFT = one prefill "
             "plus the first argmax (the `prefill` mode gives its median).", ""]
    lines += [f"![{p.stem}]({p.relative_to(out_dir)})" for p in figures] + [""]
    for key, grp in table.groupby(GROUP, sort=True):
        device, dtype, d_model, n_layers = key
        lines += [f"### decode — {device}, {dtype}, d_model {d_model}, {n_layers} layers", ""]
        lines += ["Per-token latency (p50):", "", *_grid(grp, "token_latency:p50", format_seconds)]
        if "time:min" in grp:
            lines += ["Per-token latency (fastest token; the least disturbed by other load on a shared machine):",
                      "", *_grid(grp, "time:min", format_seconds)]
        lines += ["Cache / state size at context L:", "", *_grid(grp, "state_bytes:value", format_bytes)]
        for (m, b, batch, graphs), g in grp.groupby(SERIES, sort=True):
            alpha = fit_exponent(g.seq_len, g["token_latency:p50"])
            if not math.isnan(alpha):
                lines.append(f"- {_label(m, b, batch, graphs)}: latency ~ L^{_exp(alpha)} (last 3 contexts)")
        lines += [f"- Crossover: {text}" for k, text in crossovers if k == key]
        lines += ["", "Generation throughput:", "", *_throughput(grp, prefill)]
        if "step_overhead_fraction:value" in grp:
            bound = grp[grp["step_overhead_fraction:value"] > OVERHEAD_BOUND]
            if not bound.empty:
                names = ", ".join(sorted(set(bound.model)))
                lines += [f"- Overhead-bound decode ({names}): over {OVERHEAD_BOUND:.0%} of a step is spent outside "
                          "its matmul/attention kernels (Python, dispatch, small element-wise ops); the per-token "
                          "numbers measure the framework more than the architecture at this width.", ""]
    return lines, figures
