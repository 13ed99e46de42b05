"""The claims section: each published claim the stored accuracy rows can speak to, with a verdict.

Every claim is a function of the protocol summary (:func:`ssmbench.report.protocol.summarise`, test rows at each
group's chosen lr, 95% t-intervals over seeds) and returns None when the results hold nothing for it. Verdicts:

- reproduced: the criterion holds on the measured evidence;
- not reproduced: the models learned what the claim presupposes (e.g. the train length) and the criterion fails;
- inconclusive within budget: the precondition was not met in the step budget, or the intervals overlap.

Criteria and what the CPU suites can show: docs/tasks.md ("Claims").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ssmbench.report.protocol import format_interval, summarise, test_value
from ssmbench.synthetic.metrics import t_interval

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive within budget"
ATTENTION = ("transformer",)


@dataclass(frozen=True)
class Claim:
    claim: str
    source: str
    criterion: str
    evidence: str
    verdict: str


def _pick(summary: pd.DataFrame, task: str, model: str) -> pd.DataFrame:
    return summary[(summary.task == task) & (summary.model == model)]


def _at_length(df: pd.DataFrame, row: pd.Series, length: int, metric: str = "accuracy") -> list[float]:
    return [test_value(df, cid, metric, length) for cid in row.case_ids]


def induction_extrapolation(df: pd.DataFrame, summary: pd.DataFrame) -> Claim | None:
    mamba, attn = _pick(summary, "induction_heads", "mamba"), _pick(summary, "induction_heads", "transformer")
    if mamba.empty or attn.empty:
        return None
    m, a = mamba.iloc[0], attn.iloc[0]
    m16, a8 = _at_length(df, m, 16 * m.train_len), _at_length(df, a, 8 * a.train_len)
    if not m16 or any(x != x for x in m16) or not a8 or any(x != x for x in a8):
        return None  # not evaluated at 16x / 8x
    am, alo, ahi = t_interval(a8)
    evidence = (f"Mamba at {16 * m.train_len} (16x): {' '.join(f'{x:.3f}' for x in m16)} per seed; attention at "
                f"{8 * a.train_len} (8x): {format_interval(am, alo, ahi)} ({' '.join(f'{x:.3f}' for x in a8)}); at "
                f"the train length Mamba {m.reached}/{m.n}, attention {a.reached}/{a.n} seeds reached "
                f"{m.threshold:g}")
    if m.reached < m.n or a.reached < a.n:
        verdict = INCONCLUSIVE  # a model that did not learn the task at its train length says nothing about 16x
    else:
        verdict = REPRODUCED if min(m16) >= 0.9 and max(a8) <= 0.3 else NOT_REPRODUCED
    return Claim("Mamba extrapolates induction heads far beyond its training length; attention does not",
                 "Gu & Dao 2023 (Mamba), §4.1.2, Table 11",
                 "Mamba >= 0.9 token accuracy at 16x the train length on every seed, attention <= 0.3 at 8x on "
                 "every seed (both having reached the threshold at the train length)", evidence, verdict)


def _separated(a: pd.Series, b: pd.Series, prefix: str) -> str:
    """REPRODUCED if a's interval lies above b's, NOT_REPRODUCED if below, else INCONCLUSIVE."""
    alo, ahi, blo, bhi = (getattr(x, f"{prefix}{k}") for x in (a, b) for k in ("lo", "hi"))
    if any(v != v for v in (alo, ahi, blo, bhi)):
        return INCONCLUSIVE  # one seed: no interval
    if alo > bhi:
        return REPRODUCED
    return NOT_REPRODUCED if ahi < blo else INCONCLUSIVE


def selective_copying(df: pd.DataFrame, summary: pd.DataFrame) -> Claim | None:
    mamba, s4d = _pick(summary, "selective_copying", "mamba"), _pick(summary, "selective_copying", "s4")
    if mamba.empty or s4d.empty:
        return None
    m, s = mamba.iloc[0], s4d.iloc[0]
    evidence = (f"sequence accuracy: Mamba {format_interval(m.seq_mean, m.seq_lo, m.seq_hi)} (lr {m.lr:g}), S4D "
                f"{format_interval(s.seq_mean, s.seq_lo, s.seq_hi)} (lr {s.lr:g}); token accuracy: Mamba "
                f"{format_interval(m.acc_mean, m.acc_lo, m.acc_hi)}, S4D "
                f"{format_interval(s.acc_mean, s.acc_lo, s.acc_hi)}"
                f"; L = {m.train_len}, {m.n}/{s.n} seeds, {m.cap} steps")
    return Claim("The selective SSM (S6) solves selective copying where the LTI S4D does not",
                 "Gu & Dao 2023 (Mamba), §4.1.1, Table 1",
                 "Mamba's sequence accuracy above S4D's with non-overlapping 95% intervals over seeds",
                 evidence, _separated(m, s, "seq_"))


def mqar_attention(df: pd.DataFrame, summary: pd.DataFrame) -> Claim | None:
    attn = summary[(summary.task == "mqar") & (summary.model == "transformer")]
    if attn.empty:
        return None
    a = attn.sort_values("train_len").iloc[0]
    evidence = (f"attention at L = {a.train_len}: {format_interval(a.acc_mean, a.acc_lo, a.acc_hi)} token accuracy "
                f"({' '.join(f'{v:.3f}' for v in a['values'])}), lr {a.lr:g}, {a.reached}/{a.n} seeds reached "
                f"{a.threshold:g}; {a.budget}")
    if a.reached == a.n:
        verdict = REPRODUCED
    else:
        verdict = INCONCLUSIVE if a.budget == "not solved within budget" or a.reached else NOT_REPRODUCED
    return Claim("Attention solves multi-query associative recall", "Arora et al. 2023 (Zoology), Fig. 2",
                 f"every seed of attention reaches {a.threshold:g} held-out accuracy at the smallest train length",
                 evidence, verdict)


def mqar_width(df: pd.DataFrame, summary: pd.DataFrame) -> Claim | None:
    mq = summary[(summary.task == "mqar") & ~summary.model.isin(ATTENTION)]
    for model, grp in mq.groupby("model"):
        if grp.d_model.nunique() < 2 or grp.train_len.nunique() < 2:
            continue
        need = {}
        for length, by_len in grp.groupby("train_len"):
            solved = by_len[by_len.acc_mean >= by_len.threshold]
            need[length] = int(solved.d_model.min()) if len(solved) else math.inf
        lengths = sorted(need)
        evidence = "; ".join(f"L={x}: " + ", ".join(f"d={r.d_model} {r.acc_mean:.3f}" for r in
                                                     grp[grp.train_len == x].sort_values("d_model").itertuples())
                             for x in lengths)
        if math.inf in need.values():
            verdict = INCONCLUSIVE if need[lengths[0]] == math.inf else REPRODUCED
        else:
            verdict = REPRODUCED if need[lengths[-1]] > need[lengths[0]] else NOT_REPRODUCED
        return Claim(f"A fixed-state model ({model}) needs more width to recall at longer sequences",
                     "Arora et al. 2023 (Zoology), Fig. 2", "the smallest d_model whose mean accuracy reaches the "
                     "threshold grows with L (none reaching it at the longer L counts as growth)", evidence, verdict)
    return None


def copying_efficiency(df: pd.DataFrame, summary: pd.DataFrame) -> Claim | None:
    cp = summary[summary.task == "copying"]
    attn, ssms = cp[cp.model.isin(ATTENTION)], cp[~cp.model.isin(ATTENTION)]
    if attn.empty or ssms.empty:
        return None
    a = attn.iloc[0]
    parts = [f"{r.label}: {r.reached}/{r.n} seeds, median {r.steps_to:.0f} steps" if r.reached else
             f"{r.label}: 0/{r.n} seeds in {r.cap} steps ({r.budget})" for r in cp.itertuples()]
    evidence = f"steps to {a.threshold:g} validation string accuracy (end marker excluded): " + "; ".join(parts)
    if a.reached < a.n:
        verdict = INCONCLUSIVE
    else:
        faster = [r for r in ssms.itertuples() if r.reached and r.steps_to <= a.steps_to]
        verdict = NOT_REPRODUCED if faster else REPRODUCED
    return Claim("Transformers learn to copy strings in far fewer steps than state space models",
                 "Jelassi et al. 2024 (Repeat After Me), Fig. 1a",
                 "attention reaches the string-accuracy threshold on every seed, and no SSM reaches it in as few "
                 "steps", evidence, verdict)


CLAIMS: list[Callable[[pd.DataFrame, pd.DataFrame], Claim | None]] = [
    induction_extrapolation, selective_copying, mqar_attention, mqar_width, copying_efficiency]


def evaluate_claims(df: pd.DataFrame) -> list[Claim]:
    summary = summarise(df)
    if summary.empty:
        return []
    return [c for fn in CLAIMS if (c := fn(df, summary)) is not None]


def claims_section(df: pd.DataFrame, out_dir: str | Path) -> tuple[list[str], list[Path]]:
    """Report section hook (ssmbench.report.build.SECTIONS): the claims table; ([], []) when no claim applies."""
    claims = evaluate_claims(df)
    if not claims:
        return [], []
    lines = ["## Published claims", "", "Computed from the stored rows (test sets at each model's lr chosen on "
             "validation; ± = 95% t-interval over seeds). Criteria: docs/tasks.md.", "",
             "| claim | source | criterion | evidence | verdict |", "|---|---|---|---|---|"]
    for c in claims:
        lines.append(f"| {c.claim} | {c.source} | {c.criterion} | {c.evidence} | **{c.verdict}** |")
    return [*lines, ""], []
