"""Helpers every report section shares: number formatting, exponent fits and crossover detection."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ssmbench.case import COMPILED_SUFFIX

ATTENTION_MODELS = ("transformer",)
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


def series_style(models: Sequence[str], model: str, backend: str) -> dict[str, Any]:
    """Line style of one (model, backend) series in a figure showing ``models``: one colour per model, so a model's
    eager and compiled series read as a pair; dashed lines for attention; hollow squares for torch.compile'd rows."""
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
               "#17becf"]
    order = sorted(set(models))
    style: dict[str, Any] = {"color": palette[order.index(model) % len(palette)] if model in order else None,
                             "linestyle": "--" if model in ATTENTION_MODELS else "-", "marker": "o"}
    if is_compiled(backend):
        style.update(marker="s", markerfacecolor="none")
    return style


def exponent_label(alpha: float) -> str:
    """"  ~L^1.23" for a legend, nothing when no exponent could be fitted (one length)."""
    return "" if not math.isfinite(alpha) else f"  ~L^{alpha:.2f}".replace("-0.00", "0.00")


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, imported on first use (matplotlib is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def length_ticks(ax: Any, lengths: Iterable[float], rotation: int = 45) -> None:
    """One labelled x tick per measured length (64, 1k, 2k, ...) and no minor ticks: the axis shows what ran."""
    ticks = sorted(set(lengths))
    if len(ticks) > 10:  # e.g. a crossover search's bisection lengths: label the powers of two only
        powers = [x for x in ticks if x > 0 and float(x).is_integer() and int(x) & (int(x) - 1) == 0]
        ticks = powers if len(powers) >= 2 else ticks[:: math.ceil(len(ticks) / 10)]
    ax.set_xticks(ticks)
    ax.set_xticklabels([format_length(x) for x in ticks], rotation=rotation)
    ax.minorticks_off()


def readable_log_y(ax: Any) -> None:
    """Label a log y axis densely enough to read values off it when the data span less than two decades.

    Decade ticks alone leave a panel spanning 40-110 MiB with a single label (or none); call after plotting.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator

    lo, hi = ax.get_ylim()
    if not (lo > 0 and hi / lo < 100):
        return
    subs = (1.0, 2.0, 5.0) if hi / lo >= 10 else tuple(float(k) for k in range(1, 10))
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def save_figure(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


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


def _series_label(model: str, backend: str) -> str:
    return f"{model} ({backend})"


def is_compiled(backend: str) -> bool:
    """Whether a backend label is a torch.compile'd row's (``case.COMPILED_SUFFIX``)."""
    return backend.endswith(COMPILED_SUFFIX)


def crossovers_vs_attention(series: dict[tuple[str, str], pd.DataFrame], column: str,
                            label: Callable[[str, str], str]) -> list[Crossover]:
    """Each non-attention series of {(model, backend): rows by seq_len} against each attention series on ``column``,
    eager with eager and compiled with compiled: across modes the comparison would be of compilers, not models."""
    attn = [(k, g) for k, g in series.items() if k[0] in ATTENTION_MODELS]
    out = []
    for (m, b), g in series.items():
        if m in ATTENTION_MODELS:
            continue
        for (am, ab), ag in attn:
            if is_compiled(b) != is_compiled(ab):
                continue
            both = g.merge(ag, on="seq_len", suffixes=("", "_attn"))
            if not both.empty:
                out.append(find_crossover(both.seq_len, both[column], both[f"{column}_attn"], label(m, b),
                                          _series_label(am, ab)))
    return out
