"""Crossover searches (``ssmbench crossover``) in the report: L* and its interval on the speed figure, and a list.

A search's summary (``searches/<id>.json``) names the figure it belongs to by mode, device, dtype, d_model and
n_layers, the same keys the speed figures are grouped by.
"""

from __future__ import annotations

from typing import Any

from ssmbench.report.common import format_length

FIGURE_KEYS = ("mode", "device", "dtype", "d_model", "n_layers")


def searches_for(searches: list[dict[str, Any]], key: tuple) -> list[dict[str, Any]]:
    """The searches of one speed figure whose answer has an interval."""
    return [s for s in searches if tuple(s.get(k) for k in FIGURE_KEYS) == tuple(key) and s.get("interval")]


def answer_sentence(s: dict[str, Any]) -> str:
    """A search's answer in one sentence; ``ssmbench crossover`` prints it and the report adds the context."""
    a, b = s["models"]
    span = f"{format_length(s['range'][0])}..{format_length(s['range'][1])}"
    note = f" ({s['note']})" if s.get("note") else ""
    if s["answer"] in ("crosses", "crosses_more_than_once") and s.get("interval"):
        slower = b if s["faster_above"] == a else a
        lo, hi = (format_length(x) for x in s["interval"])
        text = (f"{s['faster_above']} is faster than {slower} above L* ≈ {format_length(s['crossover_len'])} "
                f"(interval {lo} – {hi})")
        if s["answer"] == "crosses_more_than_once":
            return f"{text}, but they cross more than once{note}"
        return text + note
    if s["answer"] == "never_crosses":
        return f"{a} vs {b}: never cross in {span}; {s['faster_above']} is faster at every decided length{note}"
    if s["answer"] == "indistinguishable":
        return f"{a} vs {b}: no length in {span} where either is shown faster{note}"
    return f"{a} vs {b}: the search failed{note}"


def describe(s: dict[str, Any]) -> str:
    return (f"{answer_sentence(s)} — {s['mode']}, {s['device']} {s['dtype']}, d_model {s['d_model']}, "
            f"{len(s['probes'])} probes, {s['wall_s']:.0f} s, stopped by {s['stopped_by']}, per-probe confidence "
            f"{s['confidence']:.0%}")


_COLORS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def mark_searches(ax: Any, searches: list[dict[str, Any]]) -> None:
    """Shade each searched interval and draw its L* on a time-vs-L axis; the legend says which is which."""
    for i, s in enumerate(searches):
        lo, hi = s["interval"]
        color = _COLORS[i % len(_COLORS)]
        ax.axvspan(lo, hi, color=color, alpha=0.12, linewidth=0)
        ax.axvline(s["crossover_len"], color=color, linestyle="-", linewidth=1.2,
                   label=f"search: {s['faster_above']} faster above L*≈{format_length(s['crossover_len'])} "
                         f"[{format_length(lo)}–{format_length(hi)}]")


def searches_markdown(searches: list[dict[str, Any]]) -> list[str]:
    if not searches:
        return []
    lines = ["## Crossover searches", "",
             "Adaptive searches (`ssmbench crossover`): each probe measures both models interleaved and is decided "
             "by the confidence interval of their time ratio; the interval runs between the two nearest lengths "
             "where each side was shown faster.", ""]
    lines += [f"- {describe(s)}" for s in searches]
    return [*lines, ""]
