"""Output of ``ssmbench check``: display rows (shared by the CLI's rich table and Markdown), the Markdown summary
for a PR / job summary, and where it is written (``--summary PATH`` and ``$GITHUB_STEP_SUMMARY``)."""

from __future__ import annotations

import os
from pathlib import Path

from ssmbench.gate.run import CheckResult

_MARKS = {"regression": "❌ regression", "failed": "💥 failed", "unsure": "❔ unsure", "faster": "🚀 faster",
          "ok": "✅ ok", "new": "➕ new"}


def summary_rows(result: CheckResult) -> list[dict[str, str]]:
    """One row of display strings per case (the CLI's rich table and the Markdown summary share them)."""
    from statistics import median

    from ssmbench.report.common import format_seconds

    rows = []
    for c in result.cases:
        cmp = c.comparison
        verdict = _MARKS.get(c.verdict, c.verdict)
        if c.first_verdict is not None:
            verdict += f" (re-measured; was {c.first_verdict})"
        if c.rounds:
            verdict += f" ({c.rounds} rounds)"
        if c.error:
            verdict += f": {c.error[:120]}"
        rows.append({"case": c.label, "baseline": format_seconds(median(c.base)) if c.base else "–",
                     "current": format_seconds(median(c.head)) if c.head else "–",
                     "ratio": f"{cmp.ratio:.3f}" if cmp else "–",
                     "ci": f"[{cmp.ci_low:.3f}, {cmp.ci_high:.3f}]" if cmp else "–",
                     "p": f"{cmp.p:.2g}" if cmp else "–", "verdict": verdict, "status": c.verdict})
    return rows


def headline(result: CheckResult) -> str:
    bad = result.regressions
    if not bad:
        return "✅ no throughput regression"
    return f"❌ {len(bad)} regression(s): " + ", ".join(c.label for c in bad)


def render_markdown(result: CheckResult) -> str:
    plan = result.plan
    ref = "baseline" if result.mode == "baseline" else "base"
    rounds = (f"up to {plan.ab_max_rounds} rounds per case (sequential)" if result.mode == "against"
              else f"{plan.rounds} rounds")
    lines = [f"## ssmbench check: {headline(result)}", "",
             f"Suite `{plan.suite.name}` ({len(plan.cases)} cases on {plan.device}), {rounds}, "
             f"threshold +{plan.threshold:.0%}, α = {plan.alpha:g}; reference: {result.reference}.", ""]
    if result.normalisation is not None:
        lines += [f"Normalisation: {result.normalisation.describe()}.", ""]
    lines += [f"| case | {ref} | current | ratio | 95% CI | p | verdict |", "|---|---:|---:|---:|---|---:|---|"]
    for r in summary_rows(result):
        lines.append(f"| {r['case']} | {r['baseline']} | {r['current']} | {r['ratio']} | {r['ci']} | {r['p']} | "
                     f"{r['verdict'].replace('|', '/')} |")
    if result.mode == "against":
        method = "median of per-round ratios, Wilcoxon signed-rank"
        rule = (f"p below the share of --alpha {plan.alpha:g} spent at its look (sequential test: a case stops "
                "once decided) and a CI above 1")
    else:
        method = "ratio of medians, Mann-Whitney U"
        rule = f"p < {plan.alpha:g} and a CI above 1, confirmed by re-measurement"
    lines += ["", f"Ratio = time of the current code / {ref} (> 1: slower; {method} one-sided p); a "
              f"regression needs ratio > {1 + plan.threshold:.2f}, {rule}. Geometric mean of the ratios: "
              f"{result.geomean_ratio:.3f}. Wall time {result.seconds:.0f} s.", ""]
    lines += [f"- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def publish_markdown(text: str, path: str | os.PathLike[str] | None) -> list[Path]:
    """Write the summary to ``path`` (if given) and append it to $GITHUB_STEP_SUMMARY (if set)."""
    written = []
    if path is not None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        written.append(p)
    step = os.environ.get("GITHUB_STEP_SUMMARY")
    if step:
        with open(step, "a") as f:
            f.write(text)
        written.append(Path(step))
    return written
