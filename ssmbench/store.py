"""Tidy Parquet results: one row per (case, metric, statistic), one part file per finished case.

Layout under the output root (``results/`` by default)::

    parts/<case_id>.parquet   rows of one case (overwritten when the case is re-run: no duplicates)
    runs/<run_id>.parquet     one row per run: the environment fingerprint
    searches/<id>.json        the answer of one adaptive search (``ssmbench crossover``); its probes are parts

Every file is written to a temporary name in the same directory and renamed, so a killed sweep leaves either
the whole part or nothing. ``load(root)`` returns all rows as one pandas DataFrame
(equivalently: ``pandas.read_parquet("results/parts")``).
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ssmbench.case import Case

SCHEMA_VERSION = 1
STATUSES = ("ok", "oom", "timeout", "error", "skipped")

SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("case_id", pa.string()),
    ("kind", pa.string()),
    ("model", pa.string()),
    ("backend", pa.string()),  # the backend that actually ran (requested one is in ``case``)
    ("scope", pa.string()),
    ("mode", pa.string()),
    ("device", pa.string()),
    ("dtype", pa.string()),
    ("batch", pa.int64()),
    ("seq_len", pa.int64()),
    ("d_model", pa.int64()),
    ("n_layers", pa.int64()),
    ("d_state", pa.int64()),
    ("params", pa.int64()),
    ("task", pa.string()),
    ("metric", pa.string()),
    ("stat", pa.string()),
    ("value", pa.float64()),
    ("unit", pa.string()),
    ("n_samples", pa.int64()),
    ("samples", pa.list_(pa.float64())),  # raw samples, on the row that summarises them
    ("status", pa.string()),
    ("error", pa.string()),
    ("case", pa.string()),  # the full case as JSON
    ("schema_version", pa.int64()),
    ("timestamp", pa.string()),
])


@dataclass(frozen=True)
class Metric:
    """One measured value of a case."""

    metric: str  # time, tokens_per_s, peak_mem, accuracy, ...
    stat: str  # median, q25, q75, iqr, min, max, value, ...
    value: float
    unit: str
    n_samples: int = 1
    samples: tuple[float, ...] | None = None
    # Optional per-row overrides (an accuracy case evaluates several lengths: seq_len per row).
    seq_len: int | None = None


@dataclass
class CaseResult:
    status: str = "ok"
    error: str = ""
    metrics: list[Metric] | None = None
    info: dict[str, Any] | None = None  # backend that ran, params, d_state, notes


class WriteFailed(OSError):
    """A results file could not be written (read-only or full disk, a file where a directory should be...).

    Raised instead of the bare OSError so that callers can say what is saved and what is not, in one line."""

    def __init__(self, path: Path, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.path, self.cause = path, cause

    def __str__(self) -> str:
        text = self.cause.strerror or str(self.cause)
        found = re.search(r"\[errno (\d+)\]", text, re.IGNORECASE)  # pyarrow: "Error writing ... [errno 28] ..."
        code = int(found.group(1)) if found else None
        reason = os.strerror(code) if code else text
        return f"cannot write {self.path}: {reason}"


def _umask() -> int:
    """The process umask (read without changing it where /proc allows; else set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write_table(table: pa.Table, path: Path) -> None:
    """Write to a temporary file beside ``path`` and rename: a reader or a killed writer never sees half a file.

    mkstemp creates the file with mode 0600; it gets the mode a plain ``open`` would (0666 minus the umask), so a
    results directory shared through group/world permissions stays readable. Failures raise :class:`WriteFailed`.
    """
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise WriteFailed(path, exc) from exc
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(root: str | os.PathLike[str], subdirs: tuple[str, ...] = ("parts", "runs")) -> None:
    """Fail before measuring if results could not be written under ``root`` (raises :class:`WriteFailed`).

    Creates the directories and a probe file in each (os.access says yes to root on a read-only mount, and says
    nothing about a full disk or a file sitting where the directory should be)."""
    for sub in subdirs:
        d = Path(root) / sub
        if d.exists() and not d.is_dir():
            raise WriteFailed(d, OSError(errno.ENOTDIR, "a file is in the way (expected a directory)"))
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=d)
            try:
                os.write(fd, b"x")
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as exc:
            raise WriteFailed(d, exc) from None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def case_rows(run_id: str, case: Case, result: CaseResult) -> list[dict[str, Any]]:
    info = result.info or {}
    base = {
        "run_id": run_id, "case_id": case.case_id, "kind": case.kind, "model": case.model,
        "backend": info.get("backend", case.backend), "scope": case.scope, "mode": case.mode,
        "device": case.device, "dtype": case.dtype, "batch": case.batch, "seq_len": case.seq_len,
        "d_model": info.get("d_model", case.d_model), "n_layers": info.get("n_layers", case.n_layers),
        "d_state": info.get("d_state"), "params": info.get("params"), "task": case.task or None,
        "status": result.status, "error": result.error or None, "case": case.to_json(),
        "schema_version": SCHEMA_VERSION, "timestamp": _now(),
    }
    metrics = result.metrics or []
    if not metrics:
        return [{**base, "metric": "status", "stat": "none", "value": float("nan"), "unit": "",
                 "n_samples": 0, "samples": None}]
    rows = []
    for m in metrics:
        row = {**base, "metric": m.metric, "stat": m.stat, "value": float(m.value), "unit": m.unit,
               "n_samples": m.n_samples, "samples": list(m.samples) if m.samples is not None else None}
        if m.seq_len is not None:
            row["seq_len"] = m.seq_len
        rows.append(row)
    return rows


def part_path(root: str | os.PathLike[str], case: Case) -> Path:
    return Path(root) / "parts" / f"{case.case_id}.parquet"


def write_case(root: str | os.PathLike[str], run_id: str, case: Case, result: CaseResult) -> Path:
    table = pa.Table.from_pylist(case_rows(run_id, case, result), schema=SCHEMA)
    path = part_path(root, case)
    _atomic_write_table(table, path)
    return path


def write_run(root: str | os.PathLike[str], run_id: str, env: dict[str, Any], command: str = "",
              suite: str = "") -> Path:
    row = {"run_id": run_id, "timestamp": _now(), "command": command, "suite": suite,
           "schema_version": SCHEMA_VERSION, "env": json.dumps(env, sort_keys=True, default=str)}
    row.update({k: str(v) if v is not None else None for k, v in env.items()})
    path = Path(root) / "runs" / f"{run_id}.parquet"
    _atomic_write_table(pa.Table.from_pylist([row]), path)
    return path


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + f"-{os.getpid() % 100000:05d}"


def _part_files(root: Path) -> list[Path]:
    return sorted((root / "parts").glob("*.parquet"))


_PART_COLUMNS = ("case_id", "status", "metric", "stat", "value")  # without these a file is no part of ours
QUARANTINE = ".quarantine"  # damaged parts are moved to parts/.quarantine/ (out of the *.parquet glob)


def _unreadable(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "magic bytes" in text:  # pyarrow's wording for a missing footer
        return "truncated, or not a Parquet file"
    return f"unreadable: {text[:100]}"


def part_problem(path: Path) -> str | None:
    """Why a part file cannot be used (unreadable, truncated, someone else's Parquet), or None if it is fine."""
    try:
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowException) as exc:
        return _unreadable(exc)
    missing = [c for c in _PART_COLUMNS if c not in names]
    return f"not an ssmbench part (no {', '.join(missing)} column)" if missing else None


def damaged_parts(root: str | os.PathLike[str]) -> list[tuple[Path, str]]:
    """(path, problem) of every part file under ``root`` that :func:`load` would skip."""
    found = ((f, part_problem(f)) for f in _part_files(Path(root)))
    return [(f, why) for f, why in found if why is not None]


def quarantine_damaged(root: str | os.PathLike[str]) -> list[tuple[Path, str]]:
    """Move damaged part files to ``parts/.quarantine/`` (kept for inspection, no longer read); their cases count as
    unfinished, so the next sweep re-runs them. Returns (new path, problem) of each moved file."""
    moved = []
    for f, why in damaged_parts(root):
        target_dir = f.parent / QUARANTINE
        target_dir.mkdir(exist_ok=True)
        target = target_dir / f.name
        n = 1
        while target.exists():
            target, n = target_dir / f"{f.stem}.{n}{f.suffix}", n + 1
        os.replace(f, target)
        moved.append((target, why))
    return moved


def load(root: str | os.PathLike[str] = "results", skipped: list[tuple[Path, str]] | None = None) -> pd.DataFrame:
    """All result rows under ``root`` as one DataFrame (empty, with the schema's columns, if none).

    Damaged or foreign part files are skipped (a single bad file never hides the others); pass a list as
    ``skipped`` to learn which, with the reason."""
    tables = []
    for f in _part_files(Path(root)):
        why = part_problem(f)
        if why is None:
            try:
                tables.append(pq.read_table(f, schema=SCHEMA))
            except (OSError, pa.ArrowException) as exc:
                why = _unreadable(exc)
        if why is not None and skipped is not None:
            skipped.append((f, why))
    if not tables:
        return SCHEMA.empty_table().to_pandas()
    return pa.concat_tables(tables).to_pandas()


def load_runs(root: str | os.PathLike[str] = "results") -> pd.DataFrame:
    files = sorted((Path(root) / "runs").glob("*.parquet"))
    if not files:
        return pd.DataFrame(columns=["run_id", "timestamp", "command", "env"])
    frames = []
    for f in files:
        try:
            frames.append(pq.read_table(f).to_pandas())
        except (OSError, pa.ArrowException):
            continue  # a damaged run record only loses its environment line, never the results
    if not frames:
        return pd.DataFrame(columns=["run_id", "timestamp", "command", "env"])
    return pd.concat(frames, ignore_index=True)


def finished_cases(root: str | os.PathLike[str]) -> dict[str, str]:
    """case_id -> status for every case with a part file (reads only the two columns it needs)."""
    out: dict[str, str] = {}
    for f in _part_files(Path(root)):
        try:
            t = pq.read_table(f, columns=["case_id", "status"])
        except (OSError, pa.ArrowException):
            continue  # an unreadable or foreign part counts as unfinished and is re-run
        if t.num_rows:
            out[t.column("case_id")[0].as_py()] = t.column("status")[0].as_py()
    return out


def write_search(root: str | os.PathLike[str], search_id: str, summary: dict[str, Any]) -> Path:
    """The answer of one adaptive search (``ssmbench crossover``) as ``searches/<id>.json``; its probes are
    ordinary part files whose case carries ``search = <id>``."""
    path = Path(root) / "searches" / f"{search_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # as a plain open() would create it, not mkstemp's 0600
    with os.fdopen(fd, "w") as f:
        json.dump({"search_id": search_id, "schema_version": SCHEMA_VERSION, "timestamp": _now(), **summary}, f,
                  indent=1, default=str)
    os.replace(tmp, path)
    return path


def load_searches(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every stored search summary under ``root``, oldest first (unreadable files are skipped)."""
    out = []
    for f in sorted((Path(root) / "searches").glob("*.json")):
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda d: str(d.get("timestamp", "")))
