"""``ssmbench report``: figures and one Markdown report from a results directory.

The speed section is in :mod:`.speed`; other sections (accuracy, decode) register in ``SECTIONS``: functions
taking (results DataFrame, output dir) and returning (Markdown lines, figure paths).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ssmbench import store
from ssmbench.report.common import Crossover, format_length
from ssmbench.report.roofline import attach_peaks
from ssmbench.report.searches import searches_markdown
from ssmbench.report.speed import FAIRNESS_NOTES, _speed_markdown, analyse, plot_speed, speed_table


@dataclass
class ReportResult:
    markdown: Path
    figures: list[Path] = field(default_factory=list)
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    crossovers: list[Crossover] = field(default_factory=list)
    exponents: dict[str, float] = field(default_factory=dict)


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
# e.g. "ssmbench.report.accuracy:accuracy_section"; each returns [] when the results have nothing for it.
SECTIONS: list[str] = ["ssmbench.report.accuracy:accuracy_section", "ssmbench.report.claims:claims_section",
                       "ssmbench.report.decode:decode_section", "ssmbench.report.fits:fits_section",
                       "ssmbench.report.kernels:kernel_section", "ssmbench.report.contention:contention_section",
                       "ssmbench.report.roofline:roofline_section"]


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
    df = attach_peaks(df, store.load_runs(root))  # the roofline's ceilings, per run
    table = speed_table(df)
    exponents, crossovers = analyse(table) if not table.empty else ({}, [])
    searches = store.load_searches(root)
    figures = plot_speed(table, out_dir, exponents, crossovers, searches) if not table.empty else []
    lines = ["# ssmbench report", "", f"Results: `{root}` — {df.case_id.nunique()} cases, "
             f"{(df.drop_duplicates('case_id').status == 'ok').sum()} ok.", ""]
    if not table.empty:
        lines += _speed_markdown(table, exponents, crossovers, figures, out_dir)
    lines += searches_markdown(searches)
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
