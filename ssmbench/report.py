"""Figures and a Markdown report from a results directory.

Speed figures plot *time per sequence* (batch time / batch) against L on log-log axes: with equal tokens per
batch this is the cost of one length-L sequence, so attention's slope tends to 2 and an SSM's to 1. Each line
carries its fitted exponent over the last points, shaded IQR bands, and each SSM's crossover length against the
transformer is annotated.

Other parts of ssmbench add sections (accuracy, decode) through ``SECTIONS``: functions taking
(results DataFrame, output dir) and returning Markdown.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ssmbench import store

ATTENTION_MODELS = ("transformer",)
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


@dataclass(frozen=True)
class Crossover:
    ssm: str
    attention: str
    length: float | None  # interpolated L where the SSM becomes faster, None if it never/always is
    relation: str  # "at" (faster from length on) | "below" (only below it) | "always_faster" | "never_faster" | "mixed"
    faster_at: tuple[float, ...] = ()  # "mixed": the lengths where the SSM was faster

    def describe(self) -> str:
        if self.relation == "at" and self.length is not None:
            return f"{self.ssm} is faster than {self.attention} from L ≈ {format_length(self.length)}"
        if self.relation == "below" and self.length is not None:
            return f"{self.ssm} is faster than {self.attention} only below L ≈ {format_length(self.length)}"
        if self.relation == "mixed":
            where = ", ".join(format_length(x) for x in self.faster_at)
            return (f"{self.ssm} and {self.attention} cross more than once (close costs or noise); "
                    f"the SSM is faster only at L = {where}")
        if self.relation == "always_faster":
            return f"{self.ssm} is faster than {self.attention} at every measured length"
        return f"{self.ssm} is slower than {self.attention} at every measured length"


@dataclass
class ReportResult:
    markdown: Path
    figures: list[Path] = field(default_factory=list)
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    crossovers: list[Crossover] = field(default_factory=list)
    exponents: dict[str, float] = field(default_factory=dict)


def format_length(n: float) -> str:
    if n >= 1024 and abs(n / 1024 - round(n / 1024)) < 0.05:
        return f"{round(n / 1024)}k"
    if n >= 1024:
        return f"{n / 1024:.1f}k"
    return f"{n:.0f}"


def format_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "–"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def format_bytes(b: float) -> str:
    if not math.isfinite(b):
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(b) < 1024 or unit == "GiB":
            return f"{b:.3g} {unit}" if unit != "B" else f"{b:.0f} B"
        b /= 1024
    return f"{b:.3g} GiB"


def fit_exponent(lengths: Sequence[float], times: Sequence[float], last: int = 3) -> float:
    """Slope of log(time) vs log(L) over the last ``last`` points (NaN with fewer than two)."""
    pts = [(x, y) for x, y in zip(lengths, times, strict=True) if x > 0 and y > 0 and math.isfinite(y)]
    pts = sorted(pts)[-last:]
    if len(pts) < 2:
        return float("nan")
    x = np.log([p[0] for p in pts])
    y = np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def find_crossover(lengths: Sequence[float], t_ssm: Sequence[float], t_attn: Sequence[float],
                   ssm: str = "ssm", attention: str = "attention") -> Crossover:
    """Where the SSM overtakes attention: the last sign change of log(t_ssm / t_attn), interpolated in log-log."""
    pts = sorted((x, a, b) for x, a, b in zip(lengths, t_ssm, t_attn, strict=True) if a > 0 and b > 0)
    if not pts:
        return Crossover(ssm, attention, None, "never_faster")
    log_ratio = [math.log(a / b) for _, a, b in pts]
    if all(r < 0 for r in log_ratio):
        return Crossover(ssm, attention, None, "always_faster")
    if all(r >= 0 for r in log_ratio):
        return Crossover(ssm, attention, None, "never_faster")
    faster = [r < 0 for r in log_ratio]
    if not faster[-1] and sum(a != b for a, b in itertools.pairwise(faster)) > 1:
        # slower at the longest length after winning somewhere in between: no single L* describes it
        return Crossover(ssm, attention, None, "mixed", tuple(x for (x, _, _), f in zip(pts, faster, strict=True)
                                                              if f))
    if log_ratio[-1] >= 0:  # faster at short lengths only: where it stops winning, from the last sign change
        i = max(k for k, r in enumerate(log_ratio) if r < 0)
        relation = "below"
    else:  # last index where the SSM is not faster; it wins from the next point on
        i = max(k for k, r in enumerate(log_ratio) if r >= 0)
        relation = "at"
    (x0, r0), (x1, r1) = (pts[i][0], log_ratio[i]), (pts[i + 1][0], log_ratio[i + 1])
    frac = r0 / (r0 - r1)
    length = math.exp(math.log(x0) + frac * (math.log(x1) - math.log(x0)))
    return Crossover(ssm, attention, length, relation)


def speed_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per ok speed case (fwd/fwdbwd) with median/q25/q75 time, tokens/s, memory and per-sequence time."""
    speed = df[(df.kind == "speed") & (df.status == "ok") & df["mode"].isin(["fwd", "fwdbwd"])]
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


def _series_label(model: str, backend: str) -> str:
    return f"{model} ({backend})"


def _figure_groups(table: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    return list(table.groupby(["mode", "device", "dtype", "d_model", "n_layers"], sort=True))


def crossovers_vs_attention(series: dict[tuple[str, str], pd.DataFrame], column: str,
                            label: Callable[[str, str], str]) -> list[Crossover]:
    """Each non-attention series of {(model, backend): rows by seq_len} against each attention series on ``column``."""
    attn = [(k, g) for k, g in series.items() if k[0] in ATTENTION_MODELS]
    out = []
    for (m, b), g in series.items():
        if m in ATTENTION_MODELS:
            continue
        for (am, ab), ag in attn:
            both = g.merge(ag, on="seq_len", suffixes=("", "_attn"))
            if not both.empty:
                out.append(find_crossover(both.seq_len, both[column], both[f"{column}_attn"], label(m, b),
                                          _series_label(am, ab)))
    return out


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
               crossovers: list[Crossover]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for (mode, device, dtype, d_model, n_layers), grp in _figure_groups(table):
        prefix = f"{mode} {device} {dtype} d{d_model}x{n_layers}"
        fig, (ax_t, ax_tp, ax_m) = plt.subplots(1, 3, figsize=(17, 5.2))
        for (m, b), g in grp.groupby(["model", "backend"]):
            g = g.sort_values("seq_len")
            label = _series_label(m, b)
            alpha = exponents.get(f"{prefix} {label}", float("nan"))
            style = "--" if m in ATTENTION_MODELS else "-"
            (line,) = ax_t.plot(g.seq_len, g.seq_time_median * 1e3, style, marker="o",
                                label=f"{label}  ~L^{alpha:.2f}")
            ax_t.fill_between(g.seq_len, g.seq_time_q25 * 1e3, g.seq_time_q75 * 1e3, alpha=0.2,
                              color=line.get_color())
            ax_tp.plot(g.seq_len, g["tokens_per_s:median"], style, marker="o", color=line.get_color(), label=label)
            if "peak_mem_delta:max" in g:
                mem = g[g["peak_mem_delta:max"] > 0]  # a zero (all pages already resident) has no log position
                ax_m.plot(mem.seq_len, mem["peak_mem_delta:max"] / 2**20, style, marker="o",
                          color=line.get_color(), label=label)
        for c in crossovers:
            if c.ssm.startswith(prefix) and c.relation == "at" and c.length is not None:
                ax_t.axvline(c.length, color="grey", linestyle=":", linewidth=1)
                ax_t.annotate(f"{c.ssm[len(prefix) + 1:].split(' ')[0]} faster\nfrom L≈{format_length(c.length)}",
                              xy=(c.length, 0.02), xycoords=("data", "axes fraction"), xytext=(3, 0),
                              textcoords="offset points", fontsize=8, color="dimgrey", rotation=90,
                              va="bottom")
        batch_note = ", ".join(sorted({f"{t}" for t in (grp.batch * grp.seq_len).unique()}))
        ax_t.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel="time per sequence (ms)",
                 title=f"{mode}: time per sequence (median, IQR band)")
        ax_tp.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel="tokens / s",
                  title="throughput")
        ax_m.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel="peak memory of the call (MiB)",
                 title="peak memory (over what was allocated before)")
        for ax in (ax_t, ax_tp, ax_m):
            ax.set_xticks(sorted(grp.seq_len.unique()))
            ax.set_xticklabels([format_length(x) for x in sorted(grp.seq_len.unique())], rotation=45)
            ax.minorticks_off()
            ax.grid(True, which="major", alpha=0.3)
        ax_t.legend(fontsize=8)
        fig.suptitle(f"ssmbench {mode} on {device} ({dtype}), d_model={d_model}, n_layers={n_layers}, "
                     f"tokens per batch {batch_note}", fontsize=11)
        fig.tight_layout()
        path = out_dir / f"speed_{mode}_{device}_{dtype}_d{d_model}_l{n_layers}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
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
            lines.append(f"| {_series_label(m, b)} | {int(g.params.iloc[0]):,} | " + " | ".join(cells)
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
        lines.append("")
    return lines


def _failures_markdown(df: pd.DataFrame) -> list[str]:
    bad = df[df.status != "ok"].drop_duplicates("case_id")
    if bad.empty:
        return []
    lines = ["## Cases that did not finish", "", "| model | mode | L | batch | status | error |",
             "|---|---|---:|---:|---|---|"]
    for _, r in bad.sort_values(["model", "seq_len"]).iterrows():
        err = str(r.error or "").replace("|", "/")[:160]
        lines.append(f"| {r.model} | {r['mode']} | {format_length(r.seq_len)} | {r.batch} | {r.status} | {err} |")
    return [*lines, ""]


def _environment_markdown(root: Path) -> list[str]:
    runs = store.load_runs(root)
    if runs.empty:
        return []
    last = runs.sort_values("timestamp").iloc[-1]
    keys = ["timestamp", "hostname", "cpu", "cpu_count", "torch_threads", "gpu", "cuda_device", "driver", "torch",
            "cuda", "triton", "python", "ssmbench", "git_sha", "mamba_ssm", "causal_conv1d", "flash_attn"]
    items = [f"{k}: {last[k]}" for k in keys if k in last and isinstance(last[k], str) and last[k] not in ("None", "")]
    return ["## Environment (latest run)", "", *(f"- {i}" for i in items),
            f"- runs in this results directory: {len(runs)}", ""]


# Extra report sections registered by other modules: fn(df, out_dir) -> (markdown lines, figure paths)
# e.g. "ssmbench.report_accuracy:accuracy_section"; each returns [] when the results have nothing for it.
SECTIONS: list[str] = ["ssmbench.report_accuracy:accuracy_section", "ssmbench.report_decode:decode_section"]


def _extra_sections(df: pd.DataFrame, out_dir: Path) -> tuple[list[str], list[Path]]:
    from ssmbench.kernels._backend import load_target

    lines: list[str] = []
    figures: list[Path] = []
    for target in SECTIONS:
        fn: Callable[[pd.DataFrame, Path], tuple[list[str], list[Path]]] = load_target(target)
        section_lines, section_figs = fn(df, out_dir)
        lines += section_lines
        figures += section_figs
    return lines, figures


def build_report(results: str | Path = "results", out: str | Path | None = None) -> ReportResult:
    root = Path(results)
    out_dir = Path(out) if out is not None else root / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    df = store.load(root)
    table = speed_table(df)
    exponents, crossovers = analyse(table) if not table.empty else ({}, [])
    figures = plot_speed(table, out_dir, exponents, crossovers) if not table.empty else []
    lines = ["# ssmbench report", "", f"Results: `{root}` — {df.case_id.nunique()} cases, "
             f"{(df.drop_duplicates('case_id').status == 'ok').sum()} ok.", ""]
    if not table.empty:
        lines += _speed_markdown(table, exponents, crossovers, figures, out_dir)
    extra_lines, extra_figs = _extra_sections(df, out_dir)
    lines += extra_lines
    figures += extra_figs
    lines += _failures_markdown(df)
    lines += ["## Fairness", "", *(f"- {n}" for n in FAIRNESS_NOTES), ""]
    lines += _environment_markdown(root)
    md = out_dir / "report.md"
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(md)
    return ReportResult(md, figures, table, crossovers, exponents)
