"""The speed figure plots the stored numbers: each line's points against the values written to the store (a file
size says only that something was drawn)."""

from __future__ import annotations

import numpy as np

import ssmbench.report.speed as speed_report
from ssmbench import store
from ssmbench.report.build import build_report
from ssmbench.store import CaseResult, Metric

TOKENS = 4096
LENGTHS = (256, 512, 1024, 2048)


def per_sequence_s(model: str, seq_len: int) -> float:
    return (2e-9 * seq_len**2) if model == "transformer" else (2e-6 * seq_len)


def test_speed_figure_lines_are_the_stored_values(tmp_path, tiny_case, monkeypatch):
    root = tmp_path / "res"
    for seq_len in LENGTHS:
        batch = TOKENS // seq_len
        for model in ("transformer", "mamba"):
            t = per_sequence_s(model, seq_len) * batch
            mem = (3 if model == "mamba" else 5) * seq_len * 2**20
            store.write_case(root, "r", tiny_case(model=model, seq_len=seq_len, batch=batch, d_model=64, n_layers=2),
                             CaseResult(metrics=[Metric("time", "median", t, "s", 5),
                                                 Metric("time", "q25", 0.9 * t, "s", 5),
                                                 Metric("time", "q75", 1.1 * t, "s", 5),
                                                 Metric("tokens_per_s", "median", TOKENS / t, "tok/s", 5),
                                                 Metric("peak_mem_delta", "max", mem, "B")],
                                        info={"backend": "x", "params": 1000, "d_model": 64, "n_layers": 2}))
    figures = []
    real_save = speed_report.save_figure

    def save(fig, path):
        figures.append([[(line.get_label(), line.get_xydata().tolist()) for line in ax.get_lines()]
                        for ax in fig.axes])
        return real_save(fig, path)

    monkeypatch.setattr(speed_report, "save_figure", save)
    build_report(root, tmp_path / "out")
    (axes,) = figures  # one figure: fwd, cpu, float32, d64x2
    time_ax, throughput_ax, memory_ax = axes[:3]
    for model in ("transformer", "mamba"):
        def line(ax, model=model):
            (points,) = [pts for label, pts in ax if label.startswith(model)]
            return points

        np.testing.assert_allclose(line(time_ax), [[L, per_sequence_s(model, L) * 1e3] for L in LENGTHS], rtol=1e-9)
        np.testing.assert_allclose(line(throughput_ax),
                                   [[L, TOKENS / (per_sequence_s(model, L) * (TOKENS // L))] for L in LENGTHS],
                                   rtol=1e-9)
        np.testing.assert_allclose(line(memory_ax), [[L, (3 if model == "mamba" else 5) * L] for L in LENGTHS],
                                   rtol=1e-9)
