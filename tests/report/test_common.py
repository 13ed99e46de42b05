"""Figure helpers shared by the report sections."""

from __future__ import annotations

import math

from ssmbench.report.common import length_ticks, pyplot, readable_log_y


def labelled_y_ticks(ax) -> list[float]:
    lo, hi = ax.get_ylim()
    return [t for t in ax.get_yticks() if lo <= t <= hi]


def test_narrow_log_axis_gets_readable_labels() -> None:
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([64, 128, 256], [48, 80, 104])  # MiB: decade ticks alone would label only 100
    ax.set(xscale="log", yscale="log")
    length_ticks(ax, [256, 64, 128, 64])
    readable_log_y(ax)
    fig.canvas.draw()
    assert len(labelled_y_ticks(ax)) >= 4
    assert [t.get_text() for t in ax.get_xticklabels()] == ["64", "128", "256"]
    plt.close(fig)


def test_wide_log_axis_keeps_decade_ticks() -> None:
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [0.01, 1.0, 1000.0])
    ax.set_yscale("log")
    readable_log_y(ax)
    fig.canvas.draw()
    assert all(abs(t - 10 ** round(math.log10(t))) < 1e-9 * t for t in labelled_y_ticks(ax))
    plt.close(fig)
