"""Multi-query associative recall (MQAR), the Zoology generator (Arora et al. 2023, arXiv 2312.04927).

Each row holds ``kv`` key-value pairs ``k1 v1 k2 v2 ...`` (a fresh random mapping per row: distinct keys from
``1 .. V//2 - 1``, distinct values from ``V//2 .. V - 1``), then a query region in which every key appears once
more, at an even offset ``2g`` after the context. The model must emit the key's value *at the query position*
(the value itself never follows in the input). Offsets ``g`` are drawn without replacement with
``p(g) ∝ g^(a-1)`` (``a = power_a``; 0.01 ≈ 1/g clusters queries right after the context, 1.0 is uniform).
Every other query-region token is 0, or, with ``random_non_queries`` (Zoology's default and the "hard" MQAR of
Based / Mamba-2), a uniform token from ``[0, V)``, so stray keys and values appear as distractors.

Convention (as Zoology's ``inputs = seq[:, :-1], labels = lab[:, 1:]``): ``labels[t]`` is the target predicted
from position ``t``; it is the value at each query-key position and -100 elsewhere (``kv`` labels per row).

Worked example, ``make_batch(1, 16, vocab_size=12, num_kv_pairs=2, random_non_queries=False)``::

    position  0    1    2    3    4    5    6    7    8    9    10   11   12   13   14   15
    inputs    2    8    4    7    0    0    4    0    0    0    0    0    2    0    0    0
    labels  -100 -100 -100 -100 -100 -100   7  -100 -100 -100 -100 -100   8  -100 -100 -100

(keys 2 -> 8 and 4 -> 7; key 4 is queried at offset 2 of the query region, key 2 at offset 8).
``num_passes > 1`` repeats the context (the JRT variant). Accuracy = argmax == label over labelled positions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ssmbench.synthetic._common import IGNORE_INDEX, Batch, TaskSpec, check_batch, check_bool, check_int, make_generator

NAME = "mqar"


def resolve(seq_len: int, params: dict[str, Any]) -> dict[str, Any]:
    """Validate MQAR params for ``seq_len``; ``num_kv_pairs=None`` becomes ``seq_len // tokens_per_kv``.

    Zoology also asserts ``vocab_size > seq_len``; the format does not need it (only ``vocab_size//2 - 1 >= kv``
    distinct keys), so it is not enforced: the CPU default V = 512 at L = 1024 is legal."""
    p = dict(params)
    check_int(NAME, "seq_len", seq_len, 2)
    if seq_len % 2:
        raise ValueError(f"{NAME}: seq_len must be even (keys sit at even offsets of the query region), got {seq_len}")
    vocab = check_int(NAME, "vocab_size", p["vocab_size"], 4)
    passes = check_int(NAME, "num_passes", p["num_passes"], 1)
    per = check_int(NAME, "tokens_per_kv", p["tokens_per_kv"], 4)
    if p["num_kv_pairs"] is None:
        p["num_kv_pairs"] = seq_len // per
        if p["num_kv_pairs"] < 1:
            raise ValueError(f"{NAME}: seq_len {seq_len} < tokens_per_kv {per} leaves no key-value pair; "
                             "set num_kv_pairs or a longer seq_len")
    kv = check_int(NAME, "num_kv_pairs", p["num_kv_pairs"], 1)
    # The context takes 2·kv·passes tokens; the query region needs kv distinct even offsets: 2·kv more.
    if 2 * kv * passes + 2 * kv > seq_len:
        raise ValueError(f"{NAME}: {kv} key-value pairs x {passes} pass(es) need seq_len >= 2*kv*passes + 2*kv = "
                         f"{2 * kv * passes + 2 * kv}, got {seq_len}")
    if vocab // 2 - 1 < kv:
        raise ValueError(f"{NAME}: vocab_size {vocab} gives {vocab // 2 - 1} key ids (1 .. vocab_size//2 - 1), fewer "
                         f"than num_kv_pairs={kv}; need vocab_size >= {2 * kv + 2}")
    power_a = p["power_a"]
    if isinstance(power_a, bool) or not isinstance(power_a, (int, float)) or not 0 < power_a <= 1:
        raise ValueError(f"{NAME}: power_a must be in (0, 1] (1 = uniform query gaps), got {power_a!r}")
    p["power_a"] = float(power_a)
    check_bool(NAME, "random_non_queries", p["random_non_queries"])
    return p


def make_batch(n: int, seq_len: int, *, vocab_size: int, num_kv_pairs: int | None = None, tokens_per_kv: int = 8,
               power_a: float = 0.01, random_non_queries: bool = True, num_passes: int = 1,
               generator: torch.Generator | None = None, seed: int | None = None) -> Batch:
    """MQAR batch: ``inputs, labels`` both ``LongTensor (n, seq_len)``; see the module docstring.

    vocab_size: total vocabulary V (0 = filler, keys 1..V//2-1, values V//2..V-1).
    num_kv_pairs: pairs per row; None -> ``seq_len // tokens_per_kv`` (ssmbench's CPU default L/8; Mamba-2 uses L/4).
    power_a: exponent of the query-gap power law. random_non_queries: fill the gaps with uniform tokens.
    num_passes: times the context is repeated before the queries.
    """
    check_batch(NAME, n, seq_len)
    p = resolve(seq_len, dict(vocab_size=vocab_size, num_kv_pairs=num_kv_pairs, tokens_per_kv=tokens_per_kv,
                              power_a=power_a, random_non_queries=random_non_queries, num_passes=num_passes))
    kv, passes, V = p["num_kv_pairs"], p["num_passes"], p["vocab_size"]
    g = make_generator(generator, seed)
    half = V // 2

    # Distinct keys / values per row: the kv largest of i.i.d. uniforms form a uniform random kv-subset, in
    # random order (torch.topk returns them sorted by score, and the scores are exchangeable).
    keys = 1 + torch.rand(n, half - 1, generator=g).topk(kv, dim=1).indices
    values = half + torch.rand(n, V - half, generator=g).topk(kv, dim=1).indices

    ctx = 2 * kv * passes
    inputs = torch.zeros(n, seq_len, dtype=torch.long)
    pairs = torch.stack([keys, values], dim=2).reshape(n, 2 * kv)
    inputs[:, :ctx] = pairs.repeat(1, passes)

    # Weighted sampling without replacement = top-kv of log p(g) + Gumbel noise (Plackett-Luce), the same
    # distribution as numpy's successive choice(..., replace=False, p=p) that Zoology uses.
    space = (seq_len - ctx) // 2
    logp = (p["power_a"] - 1.0) * torch.log(torch.arange(1, space + 1, dtype=torch.float64))
    u = torch.rand(n, space, generator=g, dtype=torch.float64).clamp_min(1e-300)
    gaps = (logp - torch.log(-torch.log(u))).topk(kv, dim=1).indices  # (n, kv), order matches keys
    qpos = ctx + 2 * gaps
    inputs.scatter_(1, qpos, keys)
    labels = torch.full((n, seq_len), IGNORE_INDEX, dtype=torch.long)
    labels.scatter_(1, qpos, values)

    if p["random_non_queries"]:
        # Drawn last, so the same seed gives the same rows with and without fillers (keys never use id 0).
        fill = torch.randint(0, V, (n, seq_len), generator=g)
        inputs = torch.where(inputs == 0, fill, inputs)
    return inputs, labels


def _vocab(params: Mapping[str, Any]) -> int:
    return int(params["vocab_size"])


def _chance(params: Mapping[str, Any]) -> float:
    # A model that knows the format but cannot bind keys to values can at best pick one of the kv values in the
    # context uniformly: 1/kv. (1/(V - V//2), a uniform guess over the value ids, is a far lower floor.)
    kv = params.get("num_kv_pairs")
    if kv is None:
        raise ValueError(f"{NAME}: chance depends on num_kv_pairs; pass the params from TASK.params(seq_len)")
    return 1.0 / kv


TASK = TaskSpec(
    name=NAME,
    summary="multi-query associative recall: recall each queried key's value (Zoology)",
    source="Zoology multiquery_ar (HazyResearch/zoology zoology/data/multiquery_ar.py); Mamba-2 §9.1",
    generate=make_batch,
    resolve=resolve,
    total_vocab=_vocab,
    chance_acc=_chance,
    # docs/tasks.md §7: V = 512 keeps V > d_model at CPU cost; kv = L/8; Zoology's power law; hard (random) fillers.
    defaults=dict(vocab_size=512, num_kv_pairs=None, tokens_per_kv=8, power_a=0.01, random_non_queries=True,
                  num_passes=1),
    lengths=(64, 128, 256),
    # Mamba-2 App. D.1 "hard" MQAR: V = 8192, kv = T/4, random fillers, T in {256, 512, 1024}.
    paper=dict(vocab_size=8192, num_kv_pairs=None, tokens_per_kv=4, power_a=0.01, random_non_queries=True,
               num_passes=1),
    paper_lengths=(256, 512, 1024),
)
