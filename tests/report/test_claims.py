"""Protocol summaries and the claims section, from stored rows with known numbers (no training)."""

from __future__ import annotations

import math

import pytest

from ssmbench import store
from ssmbench.report.build import build_report
from ssmbench.report.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, evaluate_claims
from ssmbench.report.protocol import sensitivity, summarise
from ssmbench.store import CaseResult, Metric
from ssmbench.train.plan import plan_accuracy
from ssmbench.train.protocol import with_lr


def write(root, case, *, val: float, test: dict[int, float], seq: float | None = None, reached: bool = True,
          falling: bool = False) -> None:
    train = case.seq_len
    metrics = [Metric("val_accuracy", "value", val, "fraction"), Metric("val_seq_accuracy", "value", val, "fraction"),
               Metric("val_loss", "value", 1 - val, "nats"),
               Metric("accuracy", "train_len", test[train], "fraction", seq_len=train),
               Metric("seq_accuracy", "train_len", test[train] if seq is None else seq, "fraction", seq_len=train),
               Metric("reached", "value", float(reached), "bool"), Metric("still_falling", "value", float(falling), ""),
               Metric("steps_to_threshold", "value", 300.0 if reached else math.nan, "count"),
               Metric("steps", "value", 300.0 if reached else 1000.0, "count"),
               Metric("train_time", "value", 10.0, "s"), Metric("params", "value", 1000, "count"),
               Metric("curve_step", "curve", 300, "", 3, samples=(100.0, 200.0, 300.0)),
               Metric("curve_time", "curve", 3, "", 3, samples=(1.0, 2.0, 3.0)),
               Metric(f"curve_val_{case.option('metric')}", "curve", val, "", 3, samples=(0.1, 0.5, val))]
    metrics += [Metric("accuracy", "eval", v, "fraction", seq_len=x) for x, v in test.items()]
    metrics += [Metric("chance", "eval", 0.1, "fraction", seq_len=x) for x in test]
    store.write_case(root, "r", case, CaseResult(metrics=metrics, info={"backend": "x", "params": 1000}))


def protocol(root, table: dict, screen_val: dict[str, dict[float, float]], seeds: dict[str, list]) -> None:
    """Screen rows with the given validation scores; seed rows at the best lr with the given test values."""
    for case in plan_accuracy({"device": "cpu", "lr_grid": [1e-3, 3e-3], **table}):
        val = screen_val[case.model][case.option("lr")]
        best = max(screen_val[case.model], key=screen_val[case.model].get)
        first = seeds[case.model][0] if case.option("lr") == best else {"test": {case.seq_len: 0.0}}
        write(root, case, val=val, **first)
        if case.option("lr") == best:
            for k, kw in enumerate(seeds[case.model][1:], start=1):
                write(root, with_lr(case, best, "seed", k), val=val, **kw)


def test_summary_chosen_lr_intervals_per_seed_values_and_sensitivity(tmp_path):
    protocol(tmp_path, {"task": "selective_copying", "models": "mamba,s4"},
             {"mamba": {1e-3: 0.5, 3e-3: 0.9}, "s4": {1e-3: 0.4, 3e-3: 0.2}},
             {"mamba": [{"test": {64: 0.9}, "seq": 0.8}, {"test": {64: 0.9}, "seq": 0.7},
                        {"test": {64: 0.9}, "seq": 0.9}],
              "s4": [{"test": {64: 0.5}, "seq": 0.1, "reached": False, "falling": True},
                     {"test": {64: 0.5}, "seq": 0.1, "reached": False}, {"test": {64: 0.5}, "seq": 0.1,
                                                                         "reached": False}]})
    df = store.load(tmp_path)
    s = summarise(df).set_index("model")
    assert s.loc["mamba", "lr"] == 3e-3 and s.loc["s4", "lr"] == 1e-3  # validation chose, per family
    assert s.loc["mamba", "values"] == pytest.approx([0.8, 0.7, 0.9])  # headline = seq_accuracy for this task
    assert s.loc["mamba", "mean"] == pytest.approx(0.8)
    assert s.loc["mamba", "hi"] - s.loc["mamba", "mean"] == pytest.approx(4.303 * 0.1 / math.sqrt(3), rel=1e-3)
    assert s.loc["mamba", "reached"] == 3 and s.loc["mamba", "budget"] == "solved"
    assert s.loc["s4", "budget"] == "not solved within budget"  # one seed was still improving at the cap
    sens = sensitivity(df, s.loc["mamba", "group"])
    assert list(zip(sens.lr, sens.seed, sens.role, strict=True)) == [(1e-3, 0, "screen"), (3e-3, 0, "screen"),
                                                                    (3e-3, 1, "seed"), (3e-3, 2, "seed")]
    claim = next(c for c in evaluate_claims(df) if "selective" in c.claim)
    assert claim.verdict == REPRODUCED and "0.800 ±" in claim.evidence


def test_overlapping_intervals_are_inconclusive(tmp_path):
    protocol(tmp_path, {"task": "selective_copying", "models": "mamba,s4"},
             {"mamba": {1e-3: 0.5, 3e-3: 0.9}, "s4": {1e-3: 0.4, 3e-3: 0.2}},
             {"mamba": [{"test": {64: 0.9}, "seq": v} for v in (0.2, 0.9, 0.5)],
              "s4": [{"test": {64: 0.5}, "seq": v} for v in (0.3, 0.4, 0.35)]})
    claim = next(c for c in evaluate_claims(store.load(tmp_path)) if "selective" in c.claim)
    assert claim.verdict == INCONCLUSIVE


@pytest.mark.parametrize("mamba_16x,attn_8x,attn_reached,verdict", [
    ((0.95, 0.99, 0.92), (0.1, 0.2, 0.15), True, REPRODUCED),
    ((0.95, 0.85, 0.92), (0.1, 0.2, 0.15), True, NOT_REPRODUCED),  # one Mamba seed below 0.9 at 16x
    ((0.95, 0.99, 0.92), (0.1, 0.2, 0.15), False, INCONCLUSIVE),  # attention never learned the train length
])
def test_induction_claim_verdicts(tmp_path, mamba_16x, attn_8x, attn_reached, verdict):
    def seeds(at, reached, length):
        return [{"test": {64: 1.0, length: v}, "reached": reached} for v in at]

    protocol(tmp_path, {"task": "induction_heads", "models": "transformer,mamba", "eval_lengths": "64,512,1k"},
             {"mamba": {1e-3: 0.9, 3e-3: 0.5}, "transformer": {1e-3: 0.9, 3e-3: 0.5}},
             {"mamba": seeds(mamba_16x, True, 1024), "transformer": seeds(attn_8x, attn_reached, 512)})
    (claim,) = [c for c in evaluate_claims(store.load(tmp_path)) if "induction" in c.claim]
    assert claim.verdict == verdict and "Table 11" in claim.source


def test_report_has_claims_protocol_tables_and_figures(tmp_path):
    protocol(tmp_path, {"task": "selective_copying", "models": "mamba,s4"},
             {"mamba": {1e-3: 0.5, 3e-3: 0.9}, "s4": {1e-3: 0.4, 3e-3: 0.2}},
             {"mamba": [{"test": {64: 0.9}, "seq": v} for v in (0.8, 0.7, 0.9)],
              "s4": [{"test": {64: 0.5}, "seq": v} for v in (0.1, 0.12, 0.08)]})
    res = build_report(tmp_path, tmp_path / "out")
    text = res.markdown.read_text()
    assert "## Published claims" in text and "**reproduced**" in text
    assert "| mamba | 64 | **0.003** (0.001, 0.003) | seq_accuracy 0.800 ± 0.248 | 0.800 0.700 0.900 |" in text
    assert "Sensitivity" in text and "| s4 | 64 | 0.003 | 0 | screen |" in text
    names = {f.name for f in res.figures}
    assert {"accuracy_selective_copying.png", "curves_selective_copying.png"} <= names
