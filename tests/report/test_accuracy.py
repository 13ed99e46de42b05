"""The accuracy report section: rows round-trip through the store (real worker), figures and tables hold them."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from ssmbench import store
from ssmbench.case import Case
from ssmbench.engine.runner import run_cases
from ssmbench.report.accuracy import accuracy_frame, accuracy_section, wide_table
from ssmbench.report.build import build_report
from ssmbench.store import CaseResult, Metric
from ssmbench.train.plan import plan_accuracy


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, object]:
    """Two tiny accuracy cases (transformer and mamba) run through the runner's worker subprocess."""
    root = tmp_path_factory.mktemp("acc")
    cases = plan_accuracy({"task": "induction_heads", "models": "transformer,mamba", "lengths": "8",
                           "eval_lengths": "8,16", "steps": 4, "batch": 4, "d_model": 16,
                           "params": {"vocab_size": 6}, "model_options": {"head_dim": 8, "d_state": 4},
                           "eval_examples": 16, "device": "cpu", "threads": 1, "lr": 1e-3})
    summary = run_cases(cases, root)
    return root, summary


def test_accuracy_rows_round_trip_through_the_store(trained):
    root, summary = trained
    assert [o.result.status for o in summary.outcomes] == ["ok", "ok"], [o.result.error for o in summary.outcomes]
    df = store.load(root)
    for outcome in summary.outcomes:
        rows = df[df.case_id == outcome.case.case_id]
        assert set(rows.kind) == {"accuracy"} and set(rows.task) == {"induction_heads"}
        for m in outcome.result.metrics:
            row = rows[(rows.metric == m.metric) & (rows.stat == m.stat)]
            if m.seq_len is not None:
                row = row[row.seq_len == m.seq_len]
            assert len(row) == 1 and row.value.iloc[0] == pytest.approx(m.value, nan_ok=True)
        evals = rows[(rows.metric == "accuracy") & (rows.stat == "eval")]
        assert sorted(evals.seq_len) == [8, 16]
        assert rows[(rows.metric == "accuracy") & (rows.stat == "train_len")].seq_len.tolist() == [8]


def test_report_draws_the_accuracy_figure_and_table(trained, tmp_path):
    root, summary = trained
    res = build_report(root, tmp_path)
    fig = tmp_path / "accuracy_induction_heads.png"
    assert fig in res.figures and fig.is_file() and fig.stat().st_size > 5_000
    text = res.markdown.read_text()
    assert "## Accuracy on synthetic tasks" in text and "accuracy_induction_heads.png" in text
    for outcome in summary.outcomes:
        m = {(x.metric, x.stat, x.seq_len): x.value for x in outcome.result.metrics}
        line = next(ln for ln in text.splitlines() if ln.startswith(f"| {outcome.case.model} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        # columns: model, backend, params, train L, steps, time, loss, L=8, L=16
        assert cells[2] == f"{int(m['params', 'value', None]):,}" and cells[3] == "8" and cells[4] == "4"
        assert cells[7] == f"**{m['accuracy', 'eval', 8]:.3f}**" and cells[8] == f"{m['accuracy', 'eval', 16]:.3f}"
    assert re.search(r"\| chance \|.*\| 0\.250 \| 0\.250 \|", text)


def fake(root: Path, *, model: str, train_len: int, accs: dict[int, float], seed: int = 0, d_state: int = 16,
         params: dict | None = None, chance: float = 0.1, steps: int = 100) -> None:
    """Write an accuracy case with known numbers, as run_accuracy_case would."""
    options = (("eval_lengths", tuple(accs)), ("lr", 1e-3), ("params", tuple(sorted((params or {"v": 1}).items()))),
               ("steps", steps))
    case = Case(kind="accuracy", model=model, backend="auto", mode="train", device="cpu", dtype="float32", batch=8,
                seq_len=train_len, d_model=32, n_layers=2, task="mqar", seed=seed, options=options,
                model_options=(("d_state", d_state),))
    metrics = [Metric("accuracy", "eval", a, "fraction", seq_len=length) for length, a in accs.items()]
    metrics += [Metric("chance", "eval", chance, "fraction", seq_len=length) for length in accs]
    metrics += [Metric("accuracy", "train_len", accs[train_len], "fraction", seq_len=train_len),
                Metric("train_time", "value", 3.0, "s"), Metric("steps", "value", 100, "count"),
                Metric("params", "value", 1234, "count"), Metric("final_train_loss", "value", 0.5, "nats")]
    store.write_case(root, "run", case, CaseResult(metrics=metrics, info={"backend": "x", "params": 1234}))


def test_per_length_layout_seed_mean_and_labels_that_tell_runs_apart(tmp_path):
    for seed, acc in ((0, 0.5), (1, 0.7)):
        fake(tmp_path, model="mamba", train_len=64, accs={64: acc}, seed=seed)
    fake(tmp_path, model="mamba", train_len=128, accs={128: 0.25})
    fake(tmp_path, model="mamba", train_len=64, accs={64: 0.9}, d_state=64)
    fake(tmp_path, model="transformer", train_len=64, accs={64: 1.0})
    frame = accuracy_frame(store.load(tmp_path))
    wide = wide_table(frame).set_index(["label", "train_len"])
    assert wide.loc[("mamba d_state=16", 64), "acc@64"] == pytest.approx(0.6)  # mean of two seeds
    assert wide.loc[("mamba d_state=16", 64), "n_seeds"] == 2
    assert wide.loc[("mamba d_state=64", 64), "acc@64"] == pytest.approx(0.9)
    assert wide.loc[("transformer", 64), "acc@64"] == 1.0  # nothing varies within the transformer's runs
    lines, figs = accuracy_section(store.load(tmp_path), tmp_path)
    assert [f.name for f in figs] == ["accuracy_mqar.png"] and figs[0].is_file()
    assert any(ln.startswith("| mamba d_state=16 | x | 1,234 | 128 |") and "**0.250**" in ln for ln in lines)


def test_more_steps_at_a_longer_length_stays_one_line(tmp_path):
    fake(tmp_path, model="mamba", train_len=64, accs={64: 0.9})
    fake(tmp_path, model="mamba", train_len=128, accs={128: 0.4}, steps=300)
    frame = accuracy_frame(store.load(tmp_path))
    assert set(frame.label) == {"mamba"} and sorted(frame.train_len) == [64, 128]


def test_one_figure_per_setting(tmp_path):
    fake(tmp_path, model="mamba", train_len=64, accs={64: 0.5, 256: 0.2})
    fake(tmp_path, model="mamba", train_len=64, accs={64: 0.5}, params={"v": 2})
    _, figs = accuracy_section(store.load(tmp_path), tmp_path)
    assert sorted(f.name for f in figs) == ["accuracy_mqar.png", "accuracy_mqar_2.png"]


def test_no_accuracy_rows_no_section(tmp_path):
    assert accuracy_section(store.load(tmp_path), tmp_path) == ([], [])
    speed_only = pd.DataFrame({"kind": ["speed"], "status": ["ok"]})
    assert accuracy_section(speed_only, tmp_path) == ([], [])
