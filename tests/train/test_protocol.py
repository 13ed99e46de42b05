"""The accuracy protocol: lr selection from validation rows only, phases from stored rows, early stopping on
validation, optimiser hints, seed streams, the interval arithmetic and the task defaults."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from ssmbench import store
from ssmbench.models import make_config
from ssmbench.store import CaseResult, Metric
from ssmbench.synthetic.metrics import (
    answer_mask,
    edge_extension,
    select_lr,
    still_falling,
    t_interval,
    t_quantile,
    validation_scores,
)
from ssmbench.train.optim import STREAMS, lr_factor, param_groups, stream_seed
from ssmbench.train.plan import plan_accuracy
from ssmbench.train.protocol import group_of, next_phase, run_protocol


def screen_cases(**kw):
    table = {"task": "mqar", "models": "transformer", "lengths": "64", "lr_grid": [1e-3, 3e-3, 1e-2], "seeds": 3,
             "device": "cpu", **kw}
    return plan_accuracy(table)


def fake_result(val: float, test: float, val_loss: float = 1.0) -> CaseResult:
    """A stored accuracy result whose validation and test numbers disagree on purpose."""
    return CaseResult(metrics=[Metric("val_accuracy", "value", val, "fraction"),
                               Metric("val_loss", "value", val_loss, "nats"),
                               Metric("accuracy", "train_len", test, "fraction", seq_len=64),
                               Metric("accuracy", "eval", test, "fraction", seq_len=64)])


# --- interval arithmetic ---------------------------------------------------------------------------------------

def test_t_interval_on_known_inputs():
    mean, lo, hi = t_interval([1.0, 2.0, 3.0])  # sd 1, n 3: half-width t_{.975,2} / sqrt(3) = 4.303 / 1.732
    assert mean == 2.0 and hi - mean == pytest.approx(4.303 / math.sqrt(3)) and mean - lo == pytest.approx(hi - mean)
    mean, lo, hi = t_interval([0.5, 0.7])  # sd 0.1414, n 2: 12.706 * 0.1414 / 1.414 = 1.2706
    assert mean == pytest.approx(0.6) and hi - mean == pytest.approx(1.2706, rel=1e-4)
    assert t_interval([0.9, 0.9, 0.9]) == (pytest.approx(0.9), pytest.approx(0.9), pytest.approx(0.9))
    mean, lo, hi = t_interval([0.4])
    assert mean == 0.4 and math.isnan(lo) and math.isnan(hi)  # one seed: no interval is claimed
    assert t_interval([1.0, float("nan"), 3.0])[0] == 2.0  # an unfinished seed is dropped, not a zero
    assert t_quantile(1) == 12.706 and t_quantile(30) == 2.042 and t_quantile(100) == 1.96


# --- lr selection -------------------------------------------------------------------------------------------------

def test_select_lr_best_validation_score_ties_broken_by_loss_and_nan_never_wins():
    assert select_lr({1e-3: (0.5, 1.0), 3e-3: (0.9, 0.5), 1e-2: (0.7, 0.2)}) == 3e-3
    assert select_lr({1e-3: (1.0, 0.3), 3e-3: (0.998, 0.1)}) == 3e-3  # tied at the top: lower loss
    assert select_lr({1e-3: (0.2, 1.0), 1e-2: (float("nan"), float("nan"))}) == 1e-3


def test_edge_extension_one_grid_step_beyond_an_edge_winner():
    grid = (1e-3, 3e-3, 1e-2)
    assert edge_extension(grid, 1e-2) == pytest.approx(3.33e-2, rel=1e-2)
    assert edge_extension(grid, 1e-3) == pytest.approx(3.33e-4, rel=1e-2)
    assert edge_extension(grid, 3e-3) is None and edge_extension((1e-3,), 1e-3) is None


def test_lr_selection_never_reads_test_rows(tmp_path):
    """Test rows favour lr 1e-3, validation rows favour 3e-3: the protocol picks 3e-3, and rewriting every test
    row (or deleting them) changes nothing."""
    screen = screen_cases()
    for case in screen:
        lr = case.option("lr")
        store.write_case(tmp_path, "r", case, fake_result(val=0.9 if lr == 3e-3 else 0.4, test=0.99 if lr == 1e-3
                                                             else 0.1))
    rows = store.load(tmp_path)
    planned, chosen = next_phase(screen, rows)
    assert list(chosen.values()) == [3e-3]
    assert [(c.option("lr"), c.option("role"), c.seed) for c in planned] == [(3e-3, "seed", 1), (3e-3, "seed", 2)]
    shuffled = rows.copy()
    test = ~shuffled.metric.str.startswith("val_")
    shuffled.loc[test, "value"] = 1.0 - shuffled.loc[test, "value"]
    assert next_phase(screen, shuffled)[1] == chosen
    assert next_phase(screen, rows[~test])[1] == chosen
    assert set(validation_scores(rows, "accuracy")) == {1e-3, 3e-3, 1e-2}


def test_phases_extend_an_edge_winner_once_then_run_the_seeds_and_resume_from_stored_rows(tmp_path):
    screen = screen_cases()
    val = {1e-3: 0.2, 3e-3: 0.5, 1e-2: 0.8, 3.33e-2: 0.6}  # the edge winner 1e-2 beats its extension
    ran = []

    def run(cases):
        for case in cases:
            if case.case_id in store.finished_cases(tmp_path):
                continue
            ran.append((case.option("lr"), case.option("role"), case.seed))
            store.write_case(tmp_path, "r", case, fake_result(val[round(case.option("lr"), 5)], 0.5))

    everything = run_protocol(screen, tmp_path, run)
    assert ran == [(1e-3, "screen", 0), (3e-3, "screen", 0), (1e-2, "screen", 0), (3.33e-2, "screen", 0),
                   (1e-2, "seed", 1), (1e-2, "seed", 2)]
    assert len(everything) == 6 and len({group_of(c) for c in everything}) == 1
    ran.clear()
    run_protocol(screen, tmp_path, run)  # resume: nothing left to run
    assert ran == []


def test_a_group_waits_for_its_whole_screen(tmp_path):
    screen = screen_cases()
    store.write_case(tmp_path, "r", screen[0], fake_result(0.9, 0.9))
    assert next_phase(screen, store.load(tmp_path)) == ([], {})


# --- training loop: validation drives early stopping -------------------------------------------------------------

def test_early_stop_and_best_weights_read_validation_rows_only(monkeypatch):
    import ssmbench.train.loop as loop

    sets = {}
    real_held_out, real_evaluate = loop._held_out, loop.evaluate

    def held_out(*args):
        tests, in_dist, val = real_held_out(*args)
        sets.update(val=id(val[0]), tests={id(t[0]) for t in tests.values()} | {id(in_dist[0])})
        return tests, in_dist, val

    calls = []

    def evaluate(model, inputs, *args):
        calls.append(id(inputs))
        return real_evaluate(model, inputs, *args)

    monkeypatch.setattr(loop, "_held_out", held_out)
    monkeypatch.setattr(loop, "evaluate", evaluate)
    (case,) = plan_accuracy({"task": "induction_heads", "models": "transformer", "lengths": "16",
                             "eval_lengths": "16,32", "params": {"vocab_size": 6}, "steps": 60, "lr": 3e-3,
                             "batch": 8, "d_model": 16, "eval_every": 20, "stop_at": 1e-6, "eval_examples": 16,
                             "val_examples": 16, "device": "cpu"})
    torch.set_num_threads(1)
    result = loop.run_accuracy_case(case)
    m = {(x.metric, x.stat): x for x in result.metrics}
    assert m["steps", "value"].value == 20  # stopped at the first validation check
    assert calls[0] == sets["val"] and set(calls[1:]) == sets["tests"]  # validation first, test rows only after
    assert sets["val"] not in sets["tests"]
    assert m["curve_step", "curve"].samples == (20.0,) and m["reached", "value"].value == 0.0  # threshold 0.9


# --- optimiser ----------------------------------------------------------------------------------------------------

def test_s4_optimiser_hints_reach_the_parameter_groups():
    model = make_config("s4", d_model=16, n_layers=1, vocab_size=8, options={"d_state": 8}).build()
    groups = param_groups(model, weight_decay=0.1, lr=1e-2)
    names = {id(p): n.rsplit(".", 1)[-1] for n, p in model.named_parameters()}
    where = {names[id(p)]: (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    for hinted in ("log_dt", "A_log_real", "A_imag"):
        assert where[hinted] == (1e-3, 0.0)  # S4's convention, whatever the peak lr
    assert where["weight"] == (1e-2, 0.1) or (1e-2, 0.1) in where.values()
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    opt = torch.optim.AdamW(groups, lr=1e-2)
    assert {g["lr"] for g in opt.param_groups} == {1e-3, 1e-2}


def test_constant_schedule_is_constant_and_warmup_is_its_own_knob():
    assert {lr_factor(s, 100, 0, "constant") for s in range(100)} == {1.0}
    assert lr_factor(0, 100, 10, "constant") == pytest.approx(0.1) and lr_factor(10, 100, 10, "constant") == 1.0
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        lr_factor(0, 10, 0, "linear")


# --- seeds ----------------------------------------------------------------------------------------------------------

def test_seed_streams_never_collide():
    seeds = [stream_seed(s, k) for s in STREAMS for k in range(200)]
    seeds += [stream_seed("test", k, 1) for k in range(200)]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2**63 for s in seeds)
    assert stream_seed("train", 3) == stream_seed("train", 3)  # reproducible


def test_validation_and_test_rows_differ_at_the_train_length():
    from ssmbench.registry import TASKS
    from ssmbench.train.optim import torch_generator

    task = TASKS.load("mqar")
    p = task.params(64, tokens_per_kv=16)
    val, _ = task.generate(64, 64, generator=torch_generator("validation", 64), **p)
    test, _ = task.generate(64, 64, generator=torch_generator("test", 64), **p)
    assert not any(torch.equal(a, b) for a, b in itertools.product(val, test))


# --- budget honesty and metrics ------------------------------------------------------------------------------------

def test_still_falling_tells_a_cut_run_from_a_plateau():
    assert still_falling([3.0 - 0.01 * i for i in range(100)])
    assert not still_falling([1.0] * 100)
    assert not still_falling([1.0])


def test_copying_strings_exclude_the_end_marker():
    labels = torch.tensor([[-100, 3, 4, 28, -100]])  # V = 26: EOS = 28
    assert answer_mask("copying", labels, {"vocab_size": 26}).tolist() == [[False, True, True, False, False]]
    assert answer_mask("mqar", labels, {}).tolist() == [[False, True, True, True, False]]


def test_calibrated_task_defaults_and_cli_overrides():
    (c,) = plan_accuracy({"task": "mqar", "models": "transformer", "lr": 3e-3, "device": "cpu"})
    assert c.seq_len == 64 and c.option("schedule") == "constant" and dict(c.option("params"))["tokens_per_kv"] == 16
    assert c.threads == 1 and c.option("lr_grid") == (3e-3,)
    cases = plan_accuracy({"task": "induction_heads", "models": "transformer,mamba", "device": "cpu"})
    assert {(c.model, c.d_model) for c in cases} == {("transformer", 128), ("mamba", 64)}
    assert {c.option("weight_decay") for c in cases} == {0.0} and len(cases) == 6
    assert max(cases[0].option("eval_lengths")) == 2048


def test_a_diverged_lr_is_a_result_not_a_failed_case(monkeypatch):
    import ssmbench.train.loop as loop

    real, calls = loop.supervised_loss, []

    def exploding(model, inputs, labels):
        loss, logits, target = real(model, inputs, labels)
        calls.append(1)
        return (loss * float("nan") if len(calls) > 3 else loss), logits, target

    monkeypatch.setattr(loop, "supervised_loss", exploding)
    (case,) = plan_accuracy({"task": "induction_heads", "models": "transformer", "lengths": "16",
                             "eval_lengths": "16", "params": {"vocab_size": 6}, "steps": 40, "lr": 3e-3,
                             "batch": 8, "d_model": 16, "eval_every": 10, "eval_examples": 8, "val_examples": 8,
                             "device": "cpu"})
    result = loop.run_accuracy_case(case)
    m = {(x.metric, x.stat): x.value for x in result.metrics}
    assert result.status == "ok" and "diverged at step 10" in result.error
    assert m["diverged", "value"] == 1.0 and m["steps", "value"] == 10 and math.isnan(m["val_accuracy", "value"])
    assert select_lr({3e-3: (m["val_accuracy", "value"], m["val_loss", "value"]), 1e-3: (0.3, 1.0)}) == 1e-3


def test_rows_stored_before_a_case_field_was_added_stay_in_their_group():
    import json

    from ssmbench.case import protocol_key

    case = json.loads(screen_cases()[0].to_json())
    older = {k: v for k, v in case.items() if k not in ("search", "max_memory", "compile")}
    assert protocol_key(older) == protocol_key(case)
