"""The stored baseline of the regression gate: one Parquet file, versioned, written atomically.

One row per case: ``key`` (the case's identity across runs, see :func:`case_key`), a readable ``label``, the case's
shape columns, ``samples`` (one time per round, seconds) and their median, and the full case as JSON. The file's
Parquet key-value metadata ``ssmbench.baseline`` holds JSON: the format version, the suite's name and path, when
it was recorded, the rounds, the machine calibration (``calibrate.Calibration``) and the environment fingerprint.
``pandas.read_parquet(path)`` reads the rows; ``read_baseline`` also checks the metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ssmbench.case import _ID_IF_SET, Case
from ssmbench.gate.calibrate import Calibration
from ssmbench.spec import SpecError

BASELINE_FORMAT = 1
META_KEY = b"ssmbench.baseline"
# Fields that do not change what one round measures: changing them keeps a baseline valid.
_NOT_IN_KEY = ("samples", "budget_s", "warmup", "timeout_s")


def case_key(case: Case) -> str:
    """Identity of a case across runs of the gate: the case_id hash without the sampling settings. Fields added to
    Case later are left out at their defaults (as in ``Case.case_id``), so a new field keeps baselines valid."""
    payload = {k: v for k, v in asdict(case).items()
               if k not in _NOT_IN_KEY and not (k in _ID_IF_SET and v == _ID_IF_SET[k])}
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Baseline:
    path: str
    meta: dict[str, Any]
    samples: dict[str, list[float]]  # key -> per-round times (s)

    @property
    def calibration(self) -> Calibration:
        return Calibration.from_dict(self.meta["calibration"])

    def same_machine(self) -> bool:
        """Recorded on this host, CPU and GPU (then the calibration is not needed to compare)."""
        from ssmbench.env import fingerprint

        env, now = self.meta.get("env", {}), fingerprint()
        return all(env.get(k) == now.get(k) for k in ("hostname", "cpu", "cuda_device"))

    def describe(self) -> str:
        env = self.meta.get("env", {})
        return (f"`{self.path}` (suite '{self.meta.get('suite')}', {len(self.samples)} cases, recorded "
                f"{self.meta.get('created', '?')} on {env.get('hostname', '?')}, {env.get('cpu', '?')}, "
                f"ssmbench {env.get('git_sha') or env.get('ssmbench') or '?'})")


def write_baseline(path: str | os.PathLike[str], *, suite: str, suite_path: str, cases: Sequence[Case],
                   samples: Mapping[str, Sequence[float]], rounds: int, calibration: Calibration,
                   command: str = "") -> Path:
    """Write ``samples[case_key(case)]`` of every case with the calibration and the environment, atomically."""
    import pyarrow as pa

    from ssmbench.env import fingerprint
    from ssmbench.store import _atomic_write_table

    rows = []
    for c in cases:
        xs = [float(x) for x in samples[case_key(c)]]
        rows.append({"key": case_key(c), "label": c.label(), "model": c.model, "backend": c.backend, "mode": c.mode,
                     "device": c.device, "dtype": c.dtype, "batch": c.batch, "seq_len": c.seq_len,
                     "d_model": c.d_model, "n_layers": c.n_layers, "tokens": c.tokens,
                     "median_s": sorted(xs)[len(xs) // 2], "samples": xs, "case": c.to_json()})
    meta = {"format": BASELINE_FORMAT, "suite": suite, "suite_path": suite_path,
            "created": datetime.now(UTC).isoformat(timespec="seconds"), "rounds": rounds,
            "calibration": calibration.to_dict(), "env": fingerprint(), "command": command}
    table = pa.Table.from_pylist(rows)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           META_KEY: json.dumps(meta, default=str).encode()})
    out = Path(path)
    _atomic_write_table(table, out)
    return out


def read_baseline(path: str | os.PathLike[str]) -> Baseline:
    """Load a baseline; a missing, unreadable or foreign file is a SpecError saying how to record one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    hint = f"record one with `ssmbench check --baseline {p} --update-baseline`"
    if not p.is_file():
        raise SpecError(f"baseline '{p}' not found; {hint}")
    try:
        table = pq.read_table(p)
    except (OSError, pa.ArrowInvalid) as exc:
        raise SpecError(f"baseline '{p}' is not a readable Parquet file ({exc}); {hint}") from None
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise SpecError(f"'{p}' is not an ssmbench baseline (no '{META_KEY.decode()}' metadata); {hint}")
    missing = sorted({"key", "samples"} - set(table.column_names))
    if missing:
        raise SpecError(f"baseline '{p}' lacks the column(s) {', '.join(missing)}; {hint}")
    try:
        meta = json.loads(raw)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise SpecError(f"baseline '{p}' has damaged metadata (not a JSON object); {hint}")
    version = meta.get("format")
    if not isinstance(version, int) or isinstance(version, bool) or version != BASELINE_FORMAT:
        raise SpecError(f"baseline '{p}' has format {version!r}, this ssmbench reads format {BASELINE_FORMAT}; {hint}")
    try:
        Calibration.from_dict(meta["calibration"])
    except (KeyError, TypeError, ValueError):
        raise SpecError(f"baseline '{p}' has no usable machine calibration in its metadata; {hint}") from None
    rows = table.select(["key", "samples"]).to_pylist()
    return Baseline(str(p), meta, {r["key"]: list(r["samples"]) for r in rows})


def check_compatible(baseline: Baseline, *, suite: str, suite_path: str, cases: Sequence[Case]) -> list[str]:
    """Raise SpecError when the baseline cannot judge these cases; return notes on lesser differences."""
    redo = f"re-record it with `ssmbench check --suite {suite_path} --baseline {baseline.path} --update-baseline`"
    if baseline.meta.get("suite") != suite:
        raise SpecError(f"baseline '{baseline.path}' was recorded for suite '{baseline.meta.get('suite')}', "
                        f"not '{suite}' ({suite_path}); pass the matching --suite, or {redo}")
    device = cases[0].device
    if baseline.calibration.device != device:
        raise SpecError(f"baseline '{baseline.path}' was recorded on {baseline.calibration.device}, this run is "
                        f"on {device}; use the matching suite and baseline (e.g. tasks/ci_gpu.toml for cuda)")
    missing = [c for c in cases if case_key(c) not in baseline.samples]
    if missing:
        shown = ", ".join(c.label() for c in missing[:4]) + (f", +{len(missing) - 4} more" if len(missing) > 4 else "")
        raise SpecError(f"baseline '{baseline.path}' lacks {len(missing)} of the {len(cases)} cases of suite "
                        f"'{suite}' ({shown}): the suite changed since it was recorded; {redo}")
    notes = []
    extra = set(baseline.samples) - {case_key(c) for c in cases}
    if extra:
        notes.append(f"the baseline has {len(extra)} case(s) the suite no longer runs (ignored)")
    from ssmbench.env import fingerprint

    env, now = baseline.meta.get("env", {}), fingerprint()
    for k in ("torch", "cpu", "cuda_device"):
        if env.get(k) != now.get(k):
            notes.append(f"{k} differs from the baseline's: {env.get(k)} -> {now.get(k)}")
    return notes
