"""The training loop of an accuracy case: supervised loss, validation on a fixed cadence, held-out test evaluation.

One accuracy case = one (model, train length, lr, seed): AdamW (betas 0.9/0.98; groups and schedule in
:mod:`ssmbench.train.optim`), gradient clipping, a fresh seeded batch every step (no epochs, so nothing can be
memorised). Every ``eval_every`` steps the model is scored on a *validation* set (its own seed stream, at the train
length, in the training length mix): that point goes on the stored learning curve, the best-scoring weights are
kept, and training stops early once the score reaches ``stop_at``. Only then, with the best weights restored, is
the model scored on the *test* sets (another seed stream), at the train length and at every eval length. The
protocol selects lrs from the validation numbers alone (:mod:`ssmbench.train.protocol`); the test numbers are
what gets reported. Everything is seeded: the same case gives the same losses and accuracies.

The LM head runs only at supervised positions (``labels != -100``): the hidden states are gathered first, so at
V = 512 with one label in eight positions (MQAR) the head costs 8x less. Planning is in :mod:`ssmbench.train.plan`.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from typing import Any

from ssmbench.case import Case
from ssmbench.synthetic.metrics import answer_mask, still_falling
from ssmbench.train.optim import lr_factor, param_groups, stream_seed, torch_generator
from ssmbench.train.plan import DTYPES, task_params

__all__ = ["evaluate", "lr_factor", "param_groups", "run_accuracy_case", "supervised_loss"]


def supervised_loss(model: Any, inputs: Any, labels: Any) -> tuple[Any, Any, Any]:
    """(mean CE over supervised positions, logits (n_sup, V), labels (n_sup,)); inputs, labels: (b, l).

    The head runs on the gathered hidden states only, never on the whole (b, l, d) tensor."""
    import torch.nn.functional as F

    mask = labels != -100
    logits = model.head(model.hidden(inputs)[mask])
    target = labels[mask]
    return F.cross_entropy(logits, target), logits, target


def evaluate(model: Any, inputs: Any, labels: Any, rows_per_batch: int, device: str, task: str = "",
             params: dict[str, Any] | None = None) -> dict[str, float]:
    """Token accuracy, sequence accuracy (every position of the row's answer string right; for copying the end
    marker is not part of the string) and mean loss over the supervised positions of a held-out set (n, l)."""
    import torch
    import torch.nn.functional as F

    correct = total = rows_ok = 0
    loss_sum = 0.0
    model.eval()
    with torch.no_grad():
        for start in range(0, inputs.shape[0], rows_per_batch):
            x = inputs[start:start + rows_per_batch].to(device)
            y = labels[start:start + rows_per_batch].to(device)
            _, logits, target = supervised_loss(model, x, y)
            hit = logits.argmax(-1) == target
            mask = y != -100
            answer = answer_mask(task, y, params or {})[mask]  # which supervised positions form the string
            per_pos = torch.ones_like(mask)
            per_pos[mask] = hit | ~answer  # positions outside the answer string count as right for the row
            correct += int(hit.sum())
            total += int(target.numel())
            rows_ok += int((per_pos.all(1) & mask.any(1)).sum())
            loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
    model.train()
    return {"accuracy": correct / max(1, total), "seq_accuracy": rows_ok / inputs.shape[0],
            "loss": loss_sum / max(1, total)}


def _status(case: Case, message: str) -> None:
    # The worker's stderr is the terminal: one short line per ~10% of training.
    print(f"  [{case.model} {case.task} L={case.seq_len}] {message}", file=sys.stderr, flush=True)


def _held_out(task: Any, case: Case, overrides: dict[str, Any], opts: dict[str, Any]) -> tuple[dict, Any, Any]:
    """(test sets per eval length, in-distribution test set at the train length, validation set). Test rows
    come from the "test" stream, validation rows from the "validation" stream: never the same rows."""
    train_p = task_params(task, case.seq_len, overrides, evaluation=False)
    tests = {}
    for length in (int(x) for x in opts["eval_lengths"]):
        p = task_params(task, length, overrides, evaluation=True)
        rows = task.generate(int(opts["eval_examples"]), length, generator=torch_generator("test", length), **p)
        tests[length] = (*rows, task.chance(p), p)
    if train_p == tests[case.seq_len][3]:
        in_dist = tests[case.seq_len]
    else:  # copying: evaluation rows hold the longest strings; in distribution = the training length mix
        rows = task.generate(int(opts["eval_examples"]), case.seq_len,
                             generator=torch_generator("test", case.seq_len, 1), **train_p)
        in_dist = (*rows, task.chance(train_p), train_p)
    n_val = int(opts.get("val_examples", 256))
    val = (*task.generate(n_val, case.seq_len, generator=torch_generator("validation", case.seq_len), **train_p),
           train_p)
    return tests, in_dist, val


def run_accuracy_case(case: Case) -> Any:
    """Train and evaluate one accuracy case; returns a :class:`ssmbench.store.CaseResult`.

    Test metrics: accuracy/seq_accuracy/loss with stat "eval" at every eval length (``seq_len`` per row) and stat
    "train_len" (in distribution) at the train length; chance per length. Validation (stat "value"): val_accuracy,
    val_seq_accuracy, val_loss of the kept (best) weights. Learning curve (stat "curve", values in ``samples``):
    curve_step, curve_time (training seconds), curve_val_accuracy, curve_val_seq_accuracy, curve_val_loss,
    curve_train_loss. Scalars: train_time, eval_time, steps, best_step, steps_to_threshold and
    time_to_threshold (nan if never), reached (0/1), still_falling (0/1), diverged (0/1: the loss became
    non-finite; training stopped there and the case is still ok), params, final_train_loss."""
    import torch

    from ssmbench.bench.measure import compile_for_case, compile_metrics
    from ssmbench.bench.speed import build_case_model, ran_backend
    from ssmbench.registry import TASKS
    from ssmbench.store import CaseResult, Metric

    opts = dict(case.options)
    task = TASKS.load(case.task)
    overrides = dict(opts["params"])
    steps, lr, stop_at = int(opts["steps"]), float(opts["lr"]), opts.get("stop_at")
    metric, threshold = opts.get("metric", "accuracy"), float(opts.get("threshold", 0.9))
    every = max(1, min(int(opts.get("eval_every", 100)), steps))
    if case.dtype not in DTYPES:
        raise ValueError(f"accuracy cases train in {' or '.join(DTYPES)}, not {case.dtype}")
    torch.manual_seed(stream_seed("init", case.seed))
    _, model, info = build_case_model(case)
    hidden, compile_stats = compile_for_case(case, model.hidden)  # --compile: the forward (and its backward)
    if compile_stats is not None:
        model.hidden = hidden
    model.train()
    train_params = task_params(task, case.seq_len, overrides, evaluation=False)
    tests, in_dist, (val_x, val_y, val_p) = _held_out(task, case, overrides, opts)
    rows_for = {length: max(1, int(opts["eval_tokens"]) // length) for length in tests}

    optimizer = torch.optim.AdamW(param_groups(model, float(opts["weight_decay"]), lr), lr=lr, betas=(0.9, 0.98))
    warmup_steps = int(float(opts["warmup"]) * steps)
    schedule = opts.get("schedule", "cosine")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, warmup_steps, schedule))
    gen = torch_generator("train", case.seed)
    curve: dict[str, list[float]] = {k: [] for k in ("step", "time", "val_accuracy", "val_seq_accuracy",
                                                    "val_loss", "train_loss")}
    losses: list[float] = []
    pending: list[torch.Tensor] = []
    best: tuple[tuple[float, float], int, dict[str, float], Any] | None = None
    reached_at: tuple[float, float] | None = None
    diverged = 0
    train_clock = 0.0
    step = 0
    while step < steps:
        t0 = time.perf_counter()
        inputs, labels = task.generate(case.batch, case.seq_len, generator=gen, **train_params)
        loss, _, _ = supervised_loss(model, inputs.to(case.device), labels.to(case.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(opts["grad_clip"]))
        optimizer.step()
        scheduler.step()
        pending.append(loss.detach())
        step += 1
        train_clock += time.perf_counter() - t0
        if step % every and step != steps:
            continue
        losses += torch.stack(pending).float().cpu().tolist()  # one device sync per validation, not per step
        recent = sum(losses[-len(pending):]) / len(pending)
        pending = []
        if not math.isfinite(recent):  # a diverged lr is a result of the grid, not a failed case
            diverged = step
            _status(case, f"lr {lr:g}: training loss non-finite by step {step}; stopping (diverged)")
            break
        val = evaluate(model, val_x, val_y, rows_for[case.seq_len], case.device, case.task, val_p)
        for key, value in (("step", step), ("time", train_clock), ("train_loss", recent),
                           *((f"val_{k}", v) for k, v in val.items())):
            curve[key].append(float(value))
        score = (val[metric], -val["loss"])
        if best is None or score > best[0]:
            best = (score, step, val, copy.deepcopy(model.state_dict()))
        if reached_at is None and val[metric] >= threshold:
            reached_at = (step, train_clock)
        msg = f"lr {lr:g} step {step}/{steps} loss {recent:.4f} val {metric} {val[metric]:.3f} ({train_clock:.0f} s)"
        if stop_at is not None and val[metric] >= float(stop_at) and step < steps:
            _status(case, msg + f" >= stop_at {stop_at}: stopping")
            break
        if step % max(every, steps // 10) < every:
            _status(case, msg)
    if best is not None:
        model.load_state_dict(best[3])  # early stopping keeps the weights validation liked best
    else:  # diverged before the first validation: nothing to select (NaN never wins the lr selection)
        best = ((math.nan, math.nan), 0, {"accuracy": math.nan, "seq_accuracy": math.nan, "loss": math.nan}, None)

    t1 = time.perf_counter()
    metrics: list[Metric] = []
    skipped = []
    for length, (x, y, chance, p) in tests.items():
        try:
            res = evaluate(model, x, y, rows_for[length], case.device, case.task, p)
        except (torch.OutOfMemoryError, MemoryError):
            # An eval length beyond what fits (attention at 1M tokens) loses that length, not the trained model.
            if length == case.seq_len:
                raise
            skipped.append(length)
            if case.device == "cuda":
                torch.cuda.empty_cache()
            continue
        for name, value in res.items():
            metrics.append(Metric(name, "eval", value, "nats" if name == "loss" else "fraction", int(x.shape[0]),
                                  seq_len=length))
        metrics.append(Metric("chance", "eval", chance, "fraction", 1, seq_len=length))
    x, y, chance, p = in_dist
    for name, value in evaluate(model, x, y, rows_for[case.seq_len], case.device, case.task, p).items():
        metrics.append(Metric(name, "train_len", value, "nats" if name == "loss" else "fraction", int(x.shape[0]),
                              seq_len=case.seq_len))
    tail = losses[-max(1, len(losses) // 20):]
    info = {**info, "backend": ran_backend(case)}
    notes = [f"training diverged at step {diverged} (non-finite loss)"] if diverged else []
    if skipped:
        notes.append(f"evaluation out of memory at L={', '.join(map(str, skipped))} (no rows there)")
    if notes:
        info["notes"] = "; ".join(notes)
    nan = float("nan")
    metrics += [
        Metric("chance", "train_len", chance, "fraction", 1, seq_len=case.seq_len),
        *(Metric(f"val_{k}", "value", v, "nats" if k == "loss" else "fraction", int(val_x.shape[0]))
          for k, v in best[2].items()),
        *(Metric(f"curve_{k}", "curve", v[-1], "", len(v), samples=tuple(v)) for k, v in curve.items() if v),
        Metric("train_time", "value", train_clock, "s"),
        Metric("eval_time", "value", time.perf_counter() - t1, "s"),
        Metric("steps", "value", step, "count"),
        Metric("best_step", "value", best[1], "count"),
        Metric("steps_to_threshold", "value", reached_at[0] if reached_at else nan, "count"),
        Metric("time_to_threshold", "value", reached_at[1] if reached_at else nan, "s"),
        Metric("reached", "value", float(reached_at is not None), "bool"),
        Metric("still_falling", "value", float(step == steps and still_falling(losses)), "bool"),
        Metric("diverged", "value", float(bool(diverged)), "bool"),
        Metric("params", "value", info["params"], "count"),
        Metric("final_train_loss", "value", sum(tail) / len(tail), "nats", len(tail)),
        *compile_metrics(case, info, compile_stats),
    ]
    return CaseResult(status="ok", error=info.get("notes", ""), metrics=metrics, info=info)
