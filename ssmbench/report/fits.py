"""The "longest L that fits in M" section: for sweeps run with ``--max-memory M``, per family and mode.

Measured where measured (the longest length that ran under the cap, the shortest that ran out of memory), and
predicted beyond from the analytic estimate stored with every case (``peak_mem_est`` coefficients, see
``bench/memory_model.py``): the longest L with param_bytes + estimate(b, L) <= M, at the series' batch. The
prediction's error on the measured points (estimate / measured peak of the call) is listed beside it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ssmbench.report.common import format_bytes, format_length

_COEFFS = ("const", "per_seq", "per_token", "per_length", "per_token_len")


def _estimate(coeffs: dict[str, float], batch: float, seq_len: float) -> float:
    return (coeffs["const"] + coeffs["per_seq"] * batch + coeffs["per_token"] * batch * seq_len
            + coeffs["per_length"] * seq_len + coeffs["per_token_len"] * batch * seq_len**2)


def predicted_longest(coeffs: dict[str, float], param_bytes: float, batch: float, cap: float) -> float:
    """The largest L with param_bytes + estimate(batch, L) <= cap (bisection on a monotone polynomial)."""
    def fits(n: float) -> bool:
        return param_bytes + _estimate(coeffs, batch, n) <= cap

    if not fits(1):
        return 0.0
    lo, hi = 1.0, 2.0
    while fits(hi):
        lo, hi = hi, hi * 2
        if hi > 2**40:
            return math.inf
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def fits_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (cap, model, backend, mode, dtype, d_model, n_layers) series run under a memory cap."""
    speed = df[df.kind == "speed"]
    if speed.empty:
        return pd.DataFrame()
    cases = speed.drop_duplicates("case_id").copy()
    cases["cap"] = cases["case"].map(lambda t: json.loads(t).get("max_memory", 0))
    cases["requested"] = cases["case"].map(lambda t: json.loads(t)["backend"])
    cases = cases[cases.cap > 0]
    if cases.empty:
        return pd.DataFrame()
    values = speed.set_index(["case_id", "metric", "stat"]).value
    rows = []
    for key, grp in cases.groupby(["cap", "model", "requested", "mode", "dtype", "d_model", "n_layers"]):
        grp = grp.sort_values("seq_len")
        ok, oom = grp[grp.status == "ok"], grp[grp.status == "oom"]
        skipped = grp[grp.status == "skipped"]
        with_est = [c for c in grp.case_id if (c, "peak_mem_est", "const") in values.index]
        coeffs = {k: values[(with_est[-1], "peak_mem_est", k)] for k in _COEFFS} if with_est else None
        param_bytes = values.get((with_est[-1], "param_bytes", "value"), 0.0) if with_est else 0.0
        errors = []
        for c in ok.case_id:
            meas, est = values.get((c, "peak_mem_delta", "max")), values.get((c, "peak_mem_est", "value"))
            if key[3] in ("prefill", "decode") and meas is not None:
                meas = meas + values.get((c, "cache_bytes_allocated", "value"), 0.0)
            if meas and est and meas > 2**20:  # below 1 MiB the RSS high-water mark is page noise
                errors.append(est / meas)
        batch = float(grp.batch.iloc[-1])
        predicted = predicted_longest(coeffs, param_bytes, batch, key[0]) if coeffs else math.nan
        rows.append({"cap": key[0], "model": key[1], "backend": key[2], "mode": key[3], "dtype": key[4],
                     "d_model": key[5], "n_layers": key[6], "batch": int(batch),
                     "longest_ok": ok.seq_len.max() if not ok.empty else math.nan,
                     "first_oom": oom.seq_len.min() if not oom.empty else math.nan, "skipped": len(skipped),
                     "predicted": predicted, "est_over_measured": errors, "param_bytes": param_bytes})
    return pd.DataFrame(rows)


def _ratio_text(errors: list[float]) -> str:
    if not errors:
        return "–"
    lo, hi = min(errors), max(errors)
    return f"x{lo:.2f}" if len(errors) == 1 else f"x{lo:.2f} – x{hi:.2f} ({len(errors)} pts)"


def fits_section(df: pd.DataFrame, out_dir: Path) -> tuple[list[str], list[Path]]:
    table = fits_table(df)
    if table.empty:
        return [], []
    lines = ["## Longest L that fits in M", "",
             "Sweeps run with `--max-memory M`: a case over the cap fails with an `oom` row (CPU: the worker's "
             "address-space limit; CUDA: the allocator's fraction) and the series' longer lengths are `skipped`. "
             "**Fits** is the measured answer when an OOM bounds it from above, else the analytic prediction "
             "(param_bytes + estimate <= M at the series' batch). The estimate's error is estimate / measured peak "
             "of the call on the lengths that ran.", "",
             "| M | model (backend) | mode | batch | longest ran | first OOM | skipped | predicted longest | "
             "**fits** | estimate / measured |", "|---:|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for _, r in table.sort_values(["cap", "mode", "model"]).iterrows():
        def fmt(n: float) -> str:
            return "–" if not math.isfinite(n) or n <= 0 else format_length(n)

        bounded = math.isfinite(r.first_oom)
        fits = (f"{fmt(r.longest_ok)} (measured; < {fmt(r.first_oom)})" if bounded and math.isfinite(r.longest_ok)
                else f"< {fmt(r.first_oom)} (measured)" if bounded
                else f"≈ {fmt(r.predicted)} (predicted)")
        lines.append(f"| {format_bytes(r.cap)} | {r.model} ({r.backend}) | {r['mode']} | {r.batch} | "
                     f"{fmt(r.longest_ok)} | {fmt(r.first_oom)} | {r.skipped} | {fmt(r.predicted)} | {fits} | "
                     f"{_ratio_text(r.est_over_measured)} |")
    return [*lines, ""], []
