"""Report section for kernel benchmarks (``ssmbench kernel``): per op and mode, each backend's median time per
length and its ratio to the op's peer backend measured in the same results, and memory as a multiple of the
inputs + outputs.

Registered in ``report.build.SECTIONS`` as ``ssmbench.report.kernels:kernel_section``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ssmbench.report.common import format_length, format_seconds

# The implementation each op's backends are compared with (the published peer or the other family's kernel).
PEERS = {"ssd": "minimal", "selective_scan": "reference", "s4_kernel": "vandermonde"}


def kernel_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per ok kernel case: op, shape, backend, mode, L, batch, median time, memory ratio."""
    if "scope" not in df:
        return pd.DataFrame()
    rows = df[(df.scope == "kernel") & (df.status == "ok")]
    if rows.empty:
        return pd.DataFrame()
    rows = rows.assign(col=rows.metric + ":" + rows.stat,
                       shape=rows["case"].map(lambda text: ", ".join(
                           f"{k}={v}" for k, v in json.loads(text).get("options", []))),
                       requested=rows["case"].map(lambda text: json.loads(text)["backend"]))
    keys = ["model", "shape", "requested", "backend", "mode", "device", "dtype", "seq_len", "batch"]
    wide = rows.pivot_table(index=keys, columns="col", values="value", aggfunc="first").reset_index()
    if "peak_mem_delta:max" in wide and "io_bytes:value" in wide:
        wide["mem_ratio"] = (wide["input_bytes:value"] + wide["peak_mem_delta:max"]) / wide["io_bytes:value"]
    return wide


def kernel_section(df: pd.DataFrame, out_dir: Path) -> tuple[list[str], list[Path]]:
    """(Markdown lines, figures); ([], []) when the results hold no kernel cases."""
    table = kernel_table(df)
    if table.empty:
        return [], []
    lines = ["## Kernels", "",
             "Median time per call; `x peer` = the peer's median / this backend's (> 1: faster than the peer), "
             "both from these results; memory = (inputs + the call's peak RSS growth) / (inputs + outputs).", ""]
    for (op, shape, mode, device, dtype, batch), grp in table.groupby(
            ["model", "shape", "mode", "device", "dtype", "batch"], sort=True):
        lengths = sorted(grp.seq_len.unique())
        peer = PEERS.get(op)
        peer_time = grp[grp.requested == peer].set_index("seq_len")["time:median"] if peer else pd.Series()
        lines += [f"**{op}** {mode}, {shape}, batch {batch}, {device} {dtype} (peer: {peer})", "",
                  "| backend | " + " | ".join(f"L={format_length(n)}" for n in lengths) + " | memory |",
                  "|---|" + "---:|" * (len(lengths) + 1)]
        for requested, sub in grp.groupby("requested", sort=True):
            by_len = sub.set_index("seq_len")
            cells = []
            for n in lengths:
                if n not in by_len.index:
                    cells.append("–")
                    continue
                t = by_len.loc[n, "time:median"]
                ratio = f" ({peer_time[n] / t:.2f}x peer)" if n in peer_time.index and requested != peer else ""
                cells.append(f"{format_seconds(t)}{ratio}")
            mem = by_len["mem_ratio"].max() if "mem_ratio" in by_len else float("nan")
            ran = "/".join(sorted(set(sub.backend)))
            label = requested if ran == requested else f"{requested} ({ran})"
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {mem:.2f}x |")
        lines.append("")
    return lines, []
