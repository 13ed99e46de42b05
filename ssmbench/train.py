"""Accuracy runs: train a fresh small model on a synthetic task at one length, evaluate at that length and beyond.

One accuracy case = one (model, train length): AdamW (betas 0.9/0.98, weight decay on weight matrices only),
linear warm-up then cosine decay to 0, gradient clipping, a fresh seeded batch every step (no epochs, so nothing
can be memorised), then accuracy on a fixed seeded held-out set at the train length and at every eval length
(length extrapolation). Everything is seeded: the same case gives the same losses and accuracies.

The LM head runs only at supervised positions (``labels != -100``): the hidden states are gathered first, so at
V = 512 with one label in eight positions (MQAR) the head costs 8x less, and induction heads (one label per row)
pays for one position per row instead of L.

Suites declare ``[[accuracy]]`` tables (see :data:`TABLE_KEYS`); ``plan_accuracy_tables`` turns them into cases,
``run_accuracy_case`` runs one in the worker. Formats and expected results: docs/tasks.md §7-8.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ssmbench.case import Case
from ssmbench.spec import SpecError, check_device_dtype, parse_lengths, parse_models

# Every key an [[accuracy]] table (or the `ssmbench accuracy` command) accepts, with its default.
TABLE_KEYS: dict[str, Any] = {
    "task": None,  # required: a registered task (ssmbench.registry.TASKS)
    "models": None,  # required: "transformer,mamba" or a list
    "lengths": None,  # train lengths; default: the task's train_length, else its CPU lengths
    "eval_lengths": None,  # extra evaluation lengths; default: the task's lengths for extrapolation tasks
    "steps": 1500,
    "lr": 1e-3,  # a number, or a table per model: { transformer = 3e-3, default = 1e-3 }
    "batch": 64,
    "d_model": 64,
    "n_layers": 2,
    "model_options": {},  # config fields, e.g. { head_dim = 16, mamba = { d_state = 16 } } (see _model_options)
    "params": {},  # task parameters, e.g. { num_kv_pairs = 8 }
    "warmup": 0.05,  # fraction of the steps spent in linear warm-up
    "schedule": "cosine",  # after the warm-up: "cosine" (to 0 at the last step) or "constant" (the Mamba paper's)
    "weight_decay": 0.1,
    "grad_clip": 1.0,
    "eval_examples": 512,  # rows of the fixed held-out set per length
    "eval_tokens": 32768,  # evaluation batch = eval_tokens // length rows (bounds attention memory)
    "stop_at": None,  # stop early once held-out accuracy at the train length reaches this (checked every 10%)
    "seed": 0,
    "device": "auto",
    "dtype": "float32",
    "threads": 0,
    "timeout_s": 1800.0,
    "name": "",
}
DTYPES = ("float32", "float64")
SCHEDULES = ("cosine", "constant")
EVAL_SEED = 1_000_003  # held-out sets depend only on task, params and length: every model sees the same rows
# Parameters that are not weight matrices although they are >= 2-D: SSM dynamics (decay would pull them to 0).
_NO_DECAY_NAMES = ("A_log", "A_log_real", "A_imag", "A_real", "log_dt", "dt_bias", "inv_dt", "D")


def _check_number(where: str, key: str, value: Any, *, integer: bool, minimum: float, open_min: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    if ok and math.isfinite(value):
        ok = value > minimum if open_min else value >= minimum
    if not ok:
        kind = "an integer" if integer else "a number"
        raise SpecError(f"{where}: {key} must be {kind} {'>' if open_min else '>='} {minimum:g}, got {value!r}")


def _length_list(where: str, key: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    if not isinstance(value, str):
        raise SpecError(f"{where}: {key} must be a length list such as \"64..256\" or [64, 128], got {value!r}")
    try:
        return parse_lengths(value)
    except SpecError as exc:
        raise SpecError(f"{where}: {key}: {exc}") from None


def _lr_per_model(where: str, lr: Any, models: Sequence[str]) -> dict[str, float]:
    from ssmbench.registry import MODELS, UnknownName

    if not isinstance(lr, Mapping):
        _check_number(where, "lr", lr, integer=False, minimum=0, open_min=True)
        return dict.fromkeys(models, float(lr))
    table: dict[str, float] = {}
    for key, value in lr.items():
        _check_number(where, f"lr.{key}", value, integer=False, minimum=0, open_min=True)
        try:
            table[key if key == "default" else MODELS.get(key).name] = float(value)
        except UnknownName as exc:
            raise SpecError(f"{where}: lr: {exc}") from None
    missing = [m for m in models if m not in table and "default" not in table]
    if missing:
        raise SpecError(f"{where}: lr table has no entry for {', '.join(missing)} (add one, or a 'default')")
    return {m: table.get(m, table.get("default", 0.0)) for m in models}


def _model_options(where: str, options: Mapping[str, Any], models: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per-model config options. Plain keys apply to every model that has the field (``d_state`` skips the
    transformer); a key naming a model holds options for that model only: ``{ head_dim = 16, mamba = { d_state =
    16 }, s4 = { d_state = 64 } }``. A plain key no registered model has, or a per-model key its model lacks, is an
    error (typos fail at planning, not in the worker)."""
    from ssmbench.models import config_fields
    from ssmbench.registry import MODELS

    frame = {"d_model", "n_layers", "vocab_size", "backend"}  # set by their own keys, not as model options
    fields = {m: config_fields(MODELS.load(m)) - frame for m in models}
    shared = {k: v for k, v in options.items() if not (k in MODELS and isinstance(v, Mapping))}
    own = {MODELS.get(k).name: dict(v) for k, v in options.items() if k in MODELS and isinstance(v, Mapping)}
    anywhere = set().union(*(config_fields(e.load()) for e in MODELS)) - frame  # so one table serves many runs
    unknown = sorted(set(shared) - anywhere)
    if unknown:
        raise SpecError(f"{where}: model_options {', '.join(unknown)} is no option of any model; "
                        f"known: {', '.join(sorted(anywhere))}")
    out = {}
    for m in models:
        bad = sorted(set(own.get(m, {})) - fields[m])
        if bad:
            raise SpecError(f"{where}: model_options.{m}: {m} has no option(s) {', '.join(bad)}; "
                            f"it has: {', '.join(sorted(fields[m]))}")
        out[m] = {**{k: v for k, v in shared.items() if k in fields[m]}, **own.get(m, {})}
    return out  # tables for models not in this run are ignored, so one options table can serve several runs


def task_params(task: Any, seq_len: int, overrides: Mapping[str, Any], *, evaluation: bool) -> dict[str, Any]:
    """Resolved task parameters at ``seq_len``. For copying evaluation every string has the longest length that
    fits the row (Jelassi et al. evaluate one string length at a time), so a longer eval row means longer strings."""
    params = dict(overrides)
    if evaluation and task.name == "copying":
        params = {k: v for k, v in params.items() if k not in ("min_len", "max_len")}
        longest = task.params(seq_len, **params)["max_len"]
        params.update(min_len=longest, max_len=longest)
    return task.params(seq_len, **params)


def _check_scalars(where: str, t: Mapping[str, Any]) -> None:
    """The numeric and enumerated keys of an [[accuracy]] table (defaults filled in)."""
    for key in ("steps", "batch", "d_model", "n_layers", "eval_examples", "eval_tokens"):
        _check_number(where, key, t[key], integer=True, minimum=1)
    _check_number(where, "seed", t["seed"], integer=True, minimum=0)
    _check_number(where, "threads", t["threads"], integer=True, minimum=0)
    for key in ("weight_decay", "grad_clip"):
        _check_number(where, key, t[key], integer=False, minimum=0)
    _check_number(where, "timeout_s", t["timeout_s"], integer=False, minimum=0, open_min=True)
    if not (isinstance(t["warmup"], (int, float)) and not isinstance(t["warmup"], bool) and 0 <= t["warmup"] < 1):
        raise SpecError(f"{where}: warmup is a fraction of the steps in [0, 1), got {t['warmup']!r}")
    if t["schedule"] not in SCHEDULES:
        raise SpecError(f"{where}: schedule must be one of {', '.join(SCHEDULES)}, got {t['schedule']!r}")
    if t["stop_at"] is not None:
        _check_number(where, "stop_at", t["stop_at"], integer=False, minimum=0, open_min=True)
    if t["dtype"] not in DTYPES:
        raise SpecError(f"{where}: accuracy runs train in {' or '.join(DTYPES)}, got dtype {t['dtype']!r}")
    try:
        check_device_dtype(t["device"], t["dtype"])
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None


def plan_accuracy(table: Mapping[str, Any], where: str = "accuracy") -> list[Case]:
    """Cases of one [[accuracy]] table: one per (train length, model). Raises SpecError on bad input."""
    from ssmbench.registry import TASKS, UnknownName
    from ssmbench.runner import resolve_device

    if not isinstance(table, Mapping):
        raise SpecError(f"{where}: expected a table of keys, got {type(table).__name__}")
    unknown = sorted(set(table) - set(TABLE_KEYS))
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(TABLE_KEYS))}")
    for key in ("task", "models"):
        if key not in table:
            raise SpecError(f"{where}: needs '{key}' (e.g. task = \"mqar\", models = \"transformer,mamba\")")
    t = {**TABLE_KEYS, **{k: v for k, v in table.items() if v is not None}}
    try:
        task = TASKS.load(str(t["task"]))
    except UnknownName as exc:
        raise SpecError(f"{where}: {exc}") from None
    models_text = ",".join(t["models"]) if isinstance(t["models"], (list, tuple)) else str(t["models"])
    try:
        models = parse_models(models_text)
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None
    default_train = (task.train_length,) if task.train_length else task.lengths
    lengths = _length_list(where, "lengths", t["lengths"]) if table.get("lengths") is not None else default_train
    if table.get("eval_lengths") is not None:
        eval_lengths = _length_list(where, "eval_lengths", t["eval_lengths"])
    else:
        eval_lengths = task.lengths if task.train_length else ()
    _check_scalars(where, t)
    for key in ("model_options", "params"):
        if not isinstance(t[key], Mapping):
            raise SpecError(f"{where}: {key} must be a table, e.g. {{ d_state = 16 }}")
    names = [m.name for m in models]
    lr = _lr_per_model(where, t["lr"], names)
    model_options = _model_options(where, t["model_options"], names)
    params = {**task.defaults, **t["params"]}
    vocab = None
    for seq_len in sorted(set(lengths) | set(eval_lengths)):
        try:
            if seq_len in lengths:
                vocab = task.vocab_size(task_params(task, seq_len, t["params"], evaluation=False))
            task_params(task, seq_len, t["params"], evaluation=True)
        except ValueError as exc:
            raise SpecError(f"{where}: at length {seq_len}: {exc}") from None
    from ssmbench.models import make_config

    for m in models:  # build each config now: a bad option value fails here, not in the worker an hour later
        try:
            make_config(m.name, backend=m.backend, d_model=t["d_model"], n_layers=t["n_layers"], vocab_size=vocab or 2,
                        options=model_options[m.name], strict=True)
        except (TypeError, ValueError) as exc:
            raise SpecError(f"{where}: model {m.name}: {exc}") from None
    try:
        device = resolve_device(t["device"])
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None
    common = (("eval_examples", t["eval_examples"]), ("eval_tokens", t["eval_tokens"]),
              ("grad_clip", float(t["grad_clip"])), ("params", tuple(sorted(params.items()))),
              ("schedule", t["schedule"]),
              ("steps", t["steps"]), ("stop_at", t["stop_at"]), ("warmup", float(t["warmup"])),
              ("weight_decay", float(t["weight_decay"])))
    cases = []
    for seq_len in lengths:
        evals = tuple(sorted(set(eval_lengths) | {seq_len}))
        for m in models:
            options = tuple(sorted((*common, ("eval_lengths", evals), ("lr", lr[m.name]))))
            cases.append(Case(kind="accuracy", model=m.name, backend=m.backend, mode="train", device=device,
                              dtype=t["dtype"], batch=t["batch"], seq_len=seq_len, d_model=t["d_model"],
                              n_layers=t["n_layers"], vocab_size=vocab or task.vocab_size(params),
                              model_options=tuple(sorted(model_options[m.name].items())), threads=t["threads"],
                              seed=t["seed"], task=task.name, options=options, timeout_s=float(t["timeout_s"])))
    return cases


def plan_accuracy_tables(tables: Iterable[Mapping[str, Any]], where: str = "suite") -> list[Case]:
    """Cases of a suite's raw [[accuracy]] tables (``ssmbench run``); SpecError names the table at fault."""
    return [c for i, table in enumerate(tables) for c in plan_accuracy(table, f"{where} [[accuracy]] #{i + 1}")]


# --------------------------------------------------------------------------------------------- training


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
