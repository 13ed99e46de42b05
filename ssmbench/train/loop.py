"""The training loop of an accuracy case: optimiser groups, schedule, supervised loss, held-out evaluation.

One accuracy case = one (model, train length): AdamW (betas 0.9/0.98, weight decay on weight matrices only),
linear warm-up then cosine decay to 0, gradient clipping, a fresh seeded batch every step (no epochs, so nothing
can be memorised), then accuracy on a fixed seeded held-out set at the train length and at every eval length
(length extrapolation). Everything is seeded: the same case gives the same losses and accuracies.

The LM head runs only at supervised positions (``labels != -100``): the hidden states are gathered first, so at
V = 512 with one label in eight positions (MQAR) the head costs 8x less, and induction heads (one label per row)
pays for one position per row instead of L. Planning (suite tables -> cases) is in :mod:`ssmbench.train.plan`.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from ssmbench.case import Case
from ssmbench.train.plan import _NO_DECAY_NAMES, DTYPES, EVAL_SEED, task_params


def param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices (>= 2-D) only; norms, biases, D and SSM dynamics get none."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        skip = p.ndim < 2 or leaf in _NO_DECAY_NAMES or getattr(p, "_no_weight_decay", False)
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, steps: int, warmup_steps: int, schedule: str = "cosine") -> float:
    """Multiplier of the peak lr at ``step`` (0-based): linear warm-up to 1, then cosine to 0 at ``steps``
    (or constant 1)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def supervised_loss(model: Any, inputs: Any, labels: Any) -> tuple[Any, Any, Any]:
    """(mean CE over supervised positions, logits (n_sup, V), labels (n_sup,)); inputs, labels: (b, l).

    The head runs on the gathered hidden states only, never on the whole (b, l, d) tensor."""
    import torch.nn.functional as F

    mask = labels != -100
    logits = model.head(model.hidden(inputs)[mask])
    target = labels[mask]
    return F.cross_entropy(logits, target), logits, target


def evaluate(model: Any, inputs: Any, labels: Any, rows_per_batch: int, device: str) -> dict[str, float]:
    """Token accuracy, exact-row accuracy and mean loss over supervised positions of a held-out set (n, l)."""
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
            per_pos = torch.ones_like(mask)
            per_pos[mask] = hit  # unsupervised positions count as correct for the row-level check
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


def run_accuracy_case(case: Case) -> Any:
    """Train and evaluate one accuracy case; returns a :class:`ssmbench.store.CaseResult`.

    Metrics: accuracy/seq_accuracy/loss with stat "eval" at every eval length (``seq_len`` per row) and stat
    "train_len" at the train length; chance/eval per length; train_time, eval_time (s), steps, params and
    final_train_loss (mean over the last 5% of steps)."""
    import torch

    from ssmbench.bench.speed import build_case_model, ran_backend
    from ssmbench.registry import TASKS
    from ssmbench.store import CaseResult, Metric

    opts = dict(case.options)
    task = TASKS.load(case.task)
    overrides = dict(opts["params"])
    steps, lr, stop_at = int(opts["steps"]), float(opts["lr"]), opts.get("stop_at")
    if case.dtype not in DTYPES:
        raise ValueError(f"accuracy cases train in {' or '.join(DTYPES)}, not {case.dtype}")
    torch.manual_seed(case.seed)
    _, model, info = build_case_model(case)
    model.train()
    train_params = task_params(task, case.seq_len, overrides, evaluation=False)
    lengths = [int(x) for x in opts["eval_lengths"]]
    held_out = {}
    for length in lengths:
        p = task_params(task, length, overrides, evaluation=True)
        held_out[length] = (*task.generate(int(opts["eval_examples"]), length, seed=EVAL_SEED + length, **p),
                            task.chance(p))
    rows_for = {length: max(1, int(opts["eval_tokens"]) // length) for length in lengths}

    optimizer = torch.optim.AdamW(param_groups(model, float(opts["weight_decay"])), lr=lr, betas=(0.9, 0.98))
    warmup_steps = int(float(opts["warmup"]) * steps)
    schedule = opts.get("schedule", "cosine")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, warmup_steps, schedule))
    gen = torch.Generator().manual_seed(10_007 * case.seed + 17)  # training stream, disjoint from EVAL_SEED's
    tick = max(1, steps // 10)
    losses: list[float] = []
    pending: list[torch.Tensor] = []
    t0 = time.perf_counter()
    step = 0
    while step < steps:
        inputs, labels = task.generate(case.batch, case.seq_len, generator=gen, **train_params)
        loss, _, _ = supervised_loss(model, inputs.to(case.device), labels.to(case.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(opts["grad_clip"]))
        optimizer.step()
        scheduler.step()
        pending.append(loss.detach())
        step += 1
        if step % tick == 0 or step == steps:
            losses += torch.stack(pending).float().cpu().tolist()  # one device sync per tick, not per step
            pending = []
            recent = sum(losses[-tick:]) / len(losses[-tick:])
            if not math.isfinite(recent):
                raise FloatingPointError(f"training loss became non-finite by step {step} (lower the lr?)")
            msg = f"step {step}/{steps} loss {recent:.4f} ({time.perf_counter() - t0:.0f} s)"
            if stop_at is not None and step < steps:
                x, y, _ = held_out[case.seq_len]
                n = min(256, x.shape[0])
                acc = evaluate(model, x[:n], y[:n], rows_for[case.seq_len], case.device)["accuracy"]
                msg += f" held-out acc {acc:.3f}"
                if acc >= float(stop_at):
                    _status(case, msg + f" >= stop_at {stop_at}: stopping")
                    break
            _status(case, msg)
    train_time = time.perf_counter() - t0

    t1 = time.perf_counter()
    metrics: list[Metric] = []
    skipped = []
    for length in lengths:
        x, y, chance = held_out[length]
        try:
            res = evaluate(model, x, y, rows_for[length], case.device)
        except (torch.OutOfMemoryError, MemoryError):
            # An eval length beyond what fits (attention at 1M tokens) loses that length, not the trained model.
            if length == case.seq_len:
                raise
            skipped.append(length)
            if case.device == "cuda":
                torch.cuda.empty_cache()
            continue
        n = int(x.shape[0])
        for name, value in res.items():
            metrics.append(Metric(name, "eval", value, "nats" if name == "loss" else "fraction", n, seq_len=length))
            if length == case.seq_len:
                metrics.append(Metric(name, "train_len", value, "nats" if name == "loss" else "fraction", n,
                                      seq_len=length))
        metrics.append(Metric("chance", "eval", chance, "fraction", 1, seq_len=length))
    tail = losses[-max(1, len(losses) // 20):]
    info = {**info, "backend": ran_backend(case)}
    if skipped:
        info["notes"] = f"evaluation out of memory at L={', '.join(map(str, skipped))} (no rows there)"
    metrics += [
        Metric("chance", "train_len", held_out[case.seq_len][2], "fraction", 1, seq_len=case.seq_len),
        Metric("train_time", "value", train_time, "s"),
        Metric("eval_time", "value", time.perf_counter() - t1, "s"),
        Metric("steps", "value", step, "count"),
        Metric("params", "value", info["params"], "count"),
        Metric("final_train_loss", "value", sum(tail) / len(tail), "nats", len(tail)),
    ]
    return CaseResult(status="ok", error=info.get("notes", ""), metrics=metrics, info=info)
