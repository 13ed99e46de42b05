"""Accuracy runs (ssmbench.train): learning, determinism, the supervised-only head, schedule, planning, bad input."""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ssmbench.models import make_config
from ssmbench.schema import load_suite
from ssmbench.spec import SpecError
from ssmbench.train.loop import lr_factor, param_groups, run_accuracy_case, supervised_loss
from ssmbench.train.plan import plan_accuracy, plan_accuracy_tables, task_params

ROOT = Path(__file__).resolve().parents[2]
SMALL_ATTN = {"head_dim": 16, "mlp_expand": 0}


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two threads contend and run 5-10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def metrics_of(result) -> dict[tuple[str, str, int | None], float]:
    return {(m.metric, m.stat, m.seq_len): m.value for m in result.metrics}


def induction_table(**kw) -> dict:
    """Induction heads at L=16 over 4 symbols: a 2-layer attention model learns it in ~150 steps."""
    table = {"task": "induction_heads", "models": "transformer", "lengths": "16", "eval_lengths": "16,32",
             "params": {"vocab_size": 6}, "steps": 200, "lr": 3e-3, "batch": 32, "d_model": 32,
             "model_options": SMALL_ATTN, "eval_examples": 256, "device": "cpu"}
    return {**table, **kw}


def test_transformer_learns_induction_far_above_chance():
    (case,) = plan_accuracy(induction_table())
    result = run_accuracy_case(case)
    assert result.status == "ok"
    m = metrics_of(result)
    chance = m["chance", "train_len", 16]
    assert chance == pytest.approx(0.25)
    assert m["accuracy", "train_len", 16] >= 0.9  # measured 1.0 for seeds 0-3; chance is 0.25
    assert m["accuracy", "eval", 16] == m["accuracy", "train_len", 16]
    assert 0 <= m["accuracy", "eval", 32] <= 1  # the extrapolation row exists
    assert m["steps", "value", None] == 200
    assert m["final_train_loss", "value", None] < 0.5 < math.log(4)  # far below the uniform guess
    assert m["params", "value", None] == result.info["params"] > 0
    assert result.info["backend"]


def test_same_seed_same_losses_and_different_seed_differs():
    table = induction_table(steps=15, eval_examples=32, eval_lengths="16")
    a, b = (metrics_of(run_accuracy_case(plan_accuracy(table)[0])) for _ in range(2))
    c = metrics_of(run_accuracy_case(plan_accuracy({**table, "seed": 1})[0]))
    timing = {"train_time", "eval_time", "curve_time", "time_to_threshold", "steps_to_threshold"}  # nan != nan
    assert {k: v for k, v in a.items() if k[0] not in timing} == {k: v for k, v in b.items() if k[0] not in timing}
    assert a["final_train_loss", "value", None] != c["final_train_loss", "value", None]


def test_mamba_trains_deterministically_on_a_tiny_case():
    table = {"task": "mqar", "models": "mamba", "lengths": "16", "steps": 3, "batch": 4, "d_model": 16,
             "params": {"vocab_size": 16, "num_kv_pairs": 2}, "eval_examples": 8, "device": "cpu",
             "model_options": {"d_state": 4}, "lr": 1e-3}
    (case,) = plan_accuracy(table)
    a, b = metrics_of(run_accuracy_case(case)), metrics_of(run_accuracy_case(case))
    assert a["final_train_loss", "value", None] == b["final_train_loss", "value", None]
    assert a["loss", "eval", 16] == b["loss", "eval", 16]
    assert a["chance", "eval", 16] == 0.5


def test_an_eval_length_that_runs_out_of_memory_is_skipped_not_fatal(monkeypatch):
    import ssmbench.train.loop as train

    real = train.evaluate

    def evaluate(model, inputs, labels, rows, device, *args):
        if inputs.shape[1] == 32:
            raise MemoryError("pretend 32 tokens do not fit")
        return real(model, inputs, labels, rows, device, *args)

    monkeypatch.setattr(train, "evaluate", evaluate)
    result = run_accuracy_case(plan_accuracy(induction_table(steps=2, eval_examples=8))[0])
    m = metrics_of(result)
    assert result.status == "ok" and "out of memory at L=32" in result.error
    assert ("accuracy", "eval", 16) in m and ("accuracy", "eval", 32) not in m


def test_stop_at_ends_training_early():
    result = run_accuracy_case(plan_accuracy(induction_table(steps=300, stop_at=0.6, eval_lengths="16",
                                                             eval_every=20))[0])
    m = metrics_of(result)
    assert m["steps", "value", None] < 300 and m["steps", "value", None] % 20 == 0  # on the cadence
    assert m["accuracy", "train_len", 16] >= 0.5


def test_head_runs_only_at_supervised_positions_and_matches_full_logits():
    torch.manual_seed(0)
    model = make_config("transformer", d_model=32, n_layers=1, vocab_size=16, options=SMALL_ATTN).build()
    x = torch.randint(0, 16, (3, 10))
    y = torch.full((3, 10), -100)
    y[0, 4], y[1, 9], y[2, 0], y[2, 7] = 3, 5, 1, 15
    calls = []
    model.head.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape))
    loss, _, target = supervised_loss(model, x, y)
    assert calls == [torch.Size([4, 32])]  # 4 supervised rows, not 3 x 10 positions
    full = model(x)
    assert torch.allclose(loss, F.cross_entropy(full.reshape(-1, 16), y.reshape(-1), ignore_index=-100), atol=1e-6)
    assert target.tolist() == [3, 5, 1, 15]  # row-major order of the supervised positions


def test_lr_schedule_warms_up_then_decays_to_zero():
    steps, warm = 100, 10
    f = [lr_factor(s, steps, warm) for s in range(steps)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(f[10:]))  # monotone after the warm-up
    assert f[55] == pytest.approx(0.5, abs=0.02) and lr_factor(steps, steps, warm) == pytest.approx(0.0)
    assert lr_factor(0, 5, 0) == 1.0  # no warm-up
    assert [lr_factor(s, steps, warm, "constant") for s in (0, 9, 10, 99)] == [pytest.approx(0.1), 1.0, 1.0, 1.0]


def test_weight_decay_only_on_weight_matrices():
    model = make_config("mamba", d_model=16, n_layers=1, vocab_size=8, options={"d_state": 4}).build()
    decay, no_decay = sorted(param_groups(model, 0.1, 3e-3), key=lambda g: -g["weight_decay"])
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)].rsplit(".", 1)[-1] for p in decay["params"]}
    kept = {names[id(p)].rsplit(".", 1)[-1] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decay["lr"] == no_decay["lr"] == 3e-3  # mamba carries no per-parameter hints
    assert "A_log" in kept and "D" in kept and "bias" in kept  # A_log is 2-D but is SSM dynamics
    assert {"weight", "conv_weight"} <= decayed and "A_log" not in decayed
    assert all(p.ndim >= 2 for p in decay["params"])


def test_plan_one_case_per_model_and_length_with_task_params_in_the_id():
    cases = plan_accuracy({"task": "selective_recall", "models": "transformer,mamba", "lengths": "64..256",
                           "lr": {"transformer": 3e-3, "default": 1e-3}, "device": "cpu"})
    assert [(c.seq_len, c.model) for c in cases] == [(64, "transformer"), (64, "mamba"), (128, "transformer"),
                                                     (128, "mamba"), (256, "transformer"), (256, "mamba")]
    assert {c.task for c in cases} == {"mqar"} and {c.vocab_size for c in cases} == {512}
    assert {c.kind for c in cases} == {"accuracy"} and {c.mode for c in cases} == {"train"}
    assert [c.option("lr") for c in cases[:2]] == [3e-3, 1e-3]
    assert cases[0].option("eval_lengths") == (64,)  # MQAR is not an extrapolation task: train length only
    assert dict(cases[0].option("params"))["vocab_size"] == 512
    other = plan_accuracy({"task": "mqar", "models": "transformer", "lengths": "64", "params": {"power_a": 1.0},
                           "lr": 3e-3, "device": "cpu"})[0]
    assert other.case_id != cases[0].case_id and dict(other.option("params"))["power_a"] == 1.0


def test_model_options_shared_and_per_family():
    opts = {"head_dim": 16, "d_state": 8, "mamba": {"d_state": 4, "expand": 1}}
    cases = plan_accuracy({"task": "mqar", "models": "transformer,mamba,mamba2", "lengths": "64", "device": "cpu",
                           "model_options": {**opts, "s4": {"d_state": 2}}})
    by_model = {c.model: dict(c.model_options) for c in cases}
    # shared keys only where the family has the field; a given key beats the task's calibrated per-family value
    assert by_model == {"transformer": {"head_dim": 16, "mlp_expand": 0}, "mamba": {"d_state": 4, "expand": 1},
                        "mamba2": {"d_state": 8, "headdim": 16}}


def test_extrapolation_tasks_default_to_their_train_length_and_eval_lengths():
    (case,) = plan_accuracy({"task": "induction", "models": "transformer", "device": "cpu", "lr": 1e-3})
    assert case.seq_len == 64 and case.option("eval_lengths") == (32, 64, 128, 256, 512, 1024, 2048)


def test_copying_evaluation_uses_the_longest_strings_that_fit():
    from ssmbench.registry import TASKS

    task = TASKS.load("copying")
    train = task_params(task, 42, {}, evaluation=False)
    assert (train["min_len"], train["max_len"]) == (5, 20)
    ev = task_params(task, 62, {"min_len": 3}, evaluation=True)
    assert ev["min_len"] == ev["max_len"] == 30


BAD = [
    ({"models": "transformer"}, "needs 'task'"),
    ({"task": "mqar"}, "needs 'models'"),
    ({"task": "mqarr", "models": "transformer"}, "did you mean 'mqar'"),
    ({"task": "mqar", "models": "transformr"}, "unknown model"),
    ({"task": "mqar", "models": "transformer", "stepz": 3}, "unknown key 'stepz'; did you mean 'steps'?"),
    ({"task": "mqar", "models": "transformer", "lengths": "64..abc"}, "lengths"),
    ({"task": "mqar", "models": "transformer", "steps": 0}, "steps must be an integer >= 1"),
    ({"task": "mqar", "models": "transformer", "steps": 1.5}, "steps must be an integer"),
    ({"task": "mqar", "models": "transformer", "lr": -1}, "lr must be a number > 0"),
    ({"task": "mqar", "models": "transformer,mamba", "lr": {"transformer": 1e-3}}, "no entry for mamba"),
    ({"task": "mqar", "models": "transformer", "model_options": {"dstate": 4}}, "model_options dstate"),
    ({"task": "mqar", "models": "transformer", "model_options": {"d_model": 4}}, "model_options d_model"),
    ({"task": "mqar", "models": "transformer", "model_options": 3}, "must be a table"),
    ({"task": "mqar", "models": "mamba", "model_options": {"mamba": {"head_dim": 8}}}, "has no option(s) head_dim"),
    ({"task": "mqar", "models": "mamba2", "model_options": {"headdim": 48}}, "model mamba2"),
    ({"task": "mqar", "models": "transformer", "params": {"kv": 3}}, "unknown parameter(s) kv"),
    ({"task": "mqar", "models": "transformer", "lengths": "8k"}, "at length 8192"),
    ({"task": "mqar", "models": "transformer", "lengths": "63"}, "must be even"),
    ({"task": "mqar", "models": "transformer", "dtype": "bfloat16"}, "float32 or float64"),
    ({"task": "mqar", "models": "transformer", "warmup": 1.5}, "warmup"),
    ({"task": "mqar", "models": "transformer", "schedule": "linear"}, "schedule must be one of cosine, constant"),
    ({"task": "mqar", "models": "transformer", "device": "tpu"}, "unknown device"),
]


@pytest.mark.parametrize("table,message", BAD, ids=[m for _, m in BAD])
def test_bad_tables_raise_one_line_spec_errors(table, message):
    with pytest.raises(SpecError) as info:
        plan_accuracy_tables([table], where="t.toml")
    text = str(info.value)
    assert message in text and text.startswith("t.toml [[accuracy]] #1") and "\n" not in text


SUITES = ["copying", "selective_copying", "selective_recall", "induction"]


@pytest.mark.parametrize("name", SUITES + [f"{s}_gpu" for s in SUITES])
def test_shipped_suites_plan(name, monkeypatch):
    import ssmbench.spec

    monkeypatch.setattr(ssmbench.spec, "resolve_device", lambda d: "cuda" if d == "cuda" else "cpu")
    suite = load_suite(ROOT / "tasks" / f"{name}.toml")
    cases = plan_accuracy_tables(suite.accuracy, where=name)
    assert cases and all(c.kind == "accuracy" for c in cases)
    assert "mamba" in {c.model for c in cases} and {c.model for c in cases} & {"transformer", "s4"}
    if name.endswith("_gpu"):
        assert {c.device for c in cases} == {"cuda"}
    else:  # CPU-sized: small widths, and a bounded number of training steps in all
        assert max(c.d_model for c in cases) <= 128 and sum(c.option("steps") for c in cases) <= 40_000


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``ssmbench ARGS`` in this process through the real entry point (exit code, stdout, stderr)."""
    from ssmbench.cli import main

    monkeypatch.setattr(sys, "argv", ["ssmbench", *args])
    with pytest.raises(SystemExit) as info:
        main()
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


def test_cli_dry_run_and_bad_input_exit_codes(tmp_path, monkeypatch, capsys):
    args = ["accuracy", "--task", "mqar", "--models", "transformer,mamba", "--lengths", "64,128", "--out",
            str(tmp_path), "--option", "head_dim=16", "--param", "num_kv_pairs=4"]
    code, out, _ = run_cli(monkeypatch, capsys, *args, "--dry-run", "--lr-grid", "1e-3,3e-3")
    assert code == 0 and "8 screen case(s)" in out and "mamba mqar train L=128" in out
    code, out, _ = run_cli(monkeypatch, capsys, *args, "--dry-run", "--lr", "transformer=3e-3,default=1e-3")
    assert code == 0 and "4 screen case(s)" in out and "lr=0.003" in out
    code, _, err = run_cli(monkeypatch, capsys, *args, "--steps", "0")
    assert code == 2 and "steps must be an integer >= 1" in err and "Traceback" not in err
    code, _, err = run_cli(monkeypatch, capsys, *args, "--param", "kv=2")
    assert code == 2 and "unknown parameter(s) kv" in err


def test_compiled_training_matches_eager_losses_in_float64(monkeypatch):
    """--compile in accuracy runs: the compiled forward/backward trains to the same losses (aot_eager backend:
    the same tracing as inductor without code generation, see tests/models/test_compile.py)."""
    from ssmbench.models import compile as compile_mod

    monkeypatch.setattr(compile_mod, "BACKEND", "aot_eager")
    table = induction_table(steps=4, eval_examples=16, eval_lengths="16", dtype="float64", compile="both")
    eager, compiled = plan_accuracy(table)
    assert (eager.compile, compiled.compile) == ("eager", "compiled") and eager.case_id != compiled.case_id
    a, b = run_accuracy_case(eager), run_accuracy_case(compiled)
    assert b.info["backend"].endswith("+torch.compile") and metrics_of(b)["graph_breaks", "value", None] == 0
    ma, mb = metrics_of(a), metrics_of(b)
    assert mb["final_train_loss", "value", None] == pytest.approx(ma["final_train_loss", "value", None], rel=1e-10)
    assert mb["loss", "eval", 16] == pytest.approx(ma["loss", "eval", 16], rel=1e-10)
