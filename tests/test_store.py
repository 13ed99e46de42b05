import json
import math
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from ssmbench import store
from ssmbench.store import CaseResult, Metric


def _ok(value: float) -> CaseResult:
    return CaseResult(metrics=[Metric("time", "median", value, "s", 3, samples=(value, value, value)),
                               Metric("tokens_per_s", "median", 32 / value, "tok/s", 3)],
                      info={"backend": "torch", "params": 123, "d_state": None})


def test_round_trip(tmp_path, tiny_case):
    case = tiny_case()
    store.write_case(tmp_path, "run1", case, _ok(0.5))
    store.write_run(tmp_path, "run1", {"cpu": "x", "torch": "2"})
    df = store.load(tmp_path)
    assert len(df) == 2
    row = df[(df.metric == "time") & (df.stat == "median")].iloc[0]
    assert row.value == 0.5 and row.case_id == case.case_id and row.params == 123 and row.backend == "torch"
    assert list(row.samples) == [0.5, 0.5, 0.5]
    assert pd.isna(row.d_state)
    # pandas reads the dataset with one call
    assert len(pd.read_parquet(tmp_path / "parts")) == 2
    runs = store.load_runs(tmp_path)
    assert runs.iloc[0].cpu == "x"


def test_rewrite_replaces_not_duplicates(tmp_path, tiny_case):
    case = tiny_case()
    store.write_case(tmp_path, "r1", case, CaseResult(status="error", error="boom"))
    store.write_case(tmp_path, "r2", case, _ok(0.25))
    df = store.load(tmp_path)
    assert set(df.run_id) == {"r2"}
    assert store.finished_cases(tmp_path) == {case.case_id: "ok"}


def test_failed_case_is_one_status_row(tmp_path, tiny_case):
    store.write_case(tmp_path, "r", tiny_case(), CaseResult(status="oom", error="OutOfMemoryError: x"))
    df = store.load(tmp_path)
    assert len(df) == 1 and df.iloc[0].status == "oom" and math.isnan(df.iloc[0].value)


def test_no_temp_files_left_and_unreadable_part_is_ignored(tmp_path, tiny_case):
    store.write_case(tmp_path, "r", tiny_case(), _ok(1.0))
    assert not list((tmp_path / "parts").glob(".*tmp"))
    (tmp_path / "parts" / "garbage.parquet").write_bytes(b"not parquet")
    assert len(store.finished_cases(tmp_path)) == 1


def test_load_empty(tmp_path):
    df = store.load(tmp_path)
    assert df.empty and "metric" in df.columns


def test_case_id_ignores_timeout_but_not_size(tiny_case):
    assert tiny_case(timeout_s=1).case_id == tiny_case(timeout_s=2).case_id
    assert tiny_case(seq_len=16).case_id != tiny_case(seq_len=32).case_id


KILLED_WRITER = """
import os, signal, sys
import pyarrow.parquet as pq
from ssmbench import store
from ssmbench.case import Case
from ssmbench.store import CaseResult, Metric

where = sys.argv[1]
real_write, real_replace = pq.write_table, os.replace

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def write_half_then_die(table, target, **kw):  # killed while writing: half a file on disk
    real_write(table, target, **kw)
    with open(target, "r+b") as f:
        f.truncate(os.path.getsize(target) // 2)
    die()

def die_before_rename(src, dst):  # killed after the write, before the rename
    die()

if where == "write":
    pq.write_table = write_half_then_die
else:
    os.replace = die_before_rename
case = Case.from_dict(__import__("json").loads(sys.argv[3]))
store.write_case(sys.argv[2], "second", case, CaseResult(metrics=[Metric("time", "median", 9.0, "s")]))
"""


@pytest.mark.parametrize("where", ["write", "rename"])
def test_a_writer_killed_mid_write_leaves_the_previous_part_whole(tmp_path, tiny_case, where):
    """A writer SIGKILLed while writing or before its rename: the case's part is the previous, whole one."""
    case = tiny_case()
    store.write_case(tmp_path, "first", case, _ok(0.5))
    r = subprocess.run([sys.executable, "-c", KILLED_WRITER, where, str(tmp_path), case.to_json()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert pq.read_table(tmp_path / "parts" / f"{case.case_id}.parquet").num_rows == 2  # whole, not half
    df = store.load(tmp_path)
    assert set(df.run_id) == {"first"} and store.finished_cases(tmp_path) == {case.case_id: "ok"}
    # the killed writer's temporary file is invisible to readers
    assert [p.name.startswith(".") for p in (tmp_path / "parts").iterdir()].count(False) == 1


def test_damaged_parts_are_skipped_named_and_quarantined(tmp_path, tiny_case):
    import pyarrow as pa

    good = store.write_case(tmp_path, "r", tiny_case(seq_len=16), _ok(1.0))
    bad = store.write_case(tmp_path, "r", tiny_case(seq_len=32), _ok(1.0))
    bad.write_bytes(bad.read_bytes()[:50])
    pq.write_table(pa.table({"x": [1]}), tmp_path / "parts" / "foreign.parquet")
    skipped: list = []
    df = store.load(tmp_path, skipped)
    assert set(df.case_id) == {tiny_case(seq_len=16).case_id}
    assert sorted(p.name for p, _ in skipped) == sorted([bad.name, "foreign.parquet"])
    moved = store.quarantine_damaged(tmp_path)
    assert len(moved) == 2 and all(p.parent.name == store.QUARANTINE for p, _ in moved)
    assert store.damaged_parts(tmp_path) == [] and good.exists()
    assert tiny_case(seq_len=32).case_id not in store.finished_cases(tmp_path)  # re-run by the next sweep


def _write_under_umask(root, case, umask: int):
    """store.write_case's part, written with the process umask set to ``umask``."""
    old = os.umask(umask)
    try:
        return store.write_case(root, "r", case, _ok(1.0))
    finally:
        os.umask(old)


def test_files_respect_the_umask_and_write_failures_are_typed(tmp_path, tiny_case):
    path = _write_under_umask(tmp_path, tiny_case(), 0o027)
    assert path.stat().st_mode & 0o777 == 0o640
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "parts").write_text("")  # a file where the parts directory should be
    with pytest.raises(store.WriteFailed, match="parts: a file is in the way"):
        store.check_writable(tmp_path / "blocked")
    with pytest.raises(store.WriteFailed, match="Not a directory"):  # below a file: the OS's own reason
        store.check_writable(tmp_path / "blocked" / "parts")
    failure = store.WriteFailed(path, OSError("Error writing bytes. Detail: [errno 28] No space left on device"))
    assert str(failure).endswith(": No space left on device")


def test_parts_get_the_mode_a_plain_open_would_give(tmp_path, tiny_case):
    """0666 minus the umask (mkstemp's 0600 would hide a shared results directory from the group)."""
    path = _write_under_umask(tmp_path, tiny_case(), 0o027)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    umask = os.umask(0)  # the process's own umask (reading it means setting it)
    os.umask(umask)
    path = store.write_case(tmp_path, "r", tiny_case(seq_len=32), _ok(1.0))
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_a_failed_write_raises_write_failed_and_leaves_no_temporary_file(tmp_path, tiny_case, monkeypatch):
    def disk_full(table, where, **kw):
        Path(where).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", disk_full)
    with pytest.raises(store.WriteFailed, match="No space left on device") as info:
        store.write_case(tmp_path, "r", tiny_case(), _ok(1.0))
    assert info.value.path.name.endswith(".parquet") and info.value.cause.errno == 28
    assert list((tmp_path / "parts").iterdir()) == []  # neither the part nor its temporary file

    def interrupted(table, where, **kw):
        Path(where).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(pq, "write_table", interrupted)
    with pytest.raises(KeyboardInterrupt):  # (no message: the interrupt itself is the behaviour)
        store.write_case(tmp_path, "r", tiny_case(), _ok(1.0))
    assert list((tmp_path / "parts").iterdir()) == []


def test_finished_cases_and_load_skip_a_damaged_part_but_keep_the_others(tmp_path, tiny_case):
    cases = [tiny_case(seq_len=n) for n in (8, 16, 32)]
    store.write_case(tmp_path, "r", cases[0], _ok(1.0))  # two metric rows
    store.write_case(tmp_path, "r", cases[1], CaseResult(status="timeout", error="slow"))
    store.write_case(tmp_path, "r", cases[2], _ok(2.0))
    bad = tmp_path / "parts" / "0000-damaged.parquet"  # sorts first
    bad.write_bytes(b"PAR1 not really")
    assert store.finished_cases(tmp_path) == {cases[0].case_id: "ok", cases[1].case_id: "timeout",
                                              cases[2].case_id: "ok"}
    skipped: list = []
    df = store.load(tmp_path, skipped=skipped)
    assert sorted(df.drop_duplicates("case_id").seq_len) == [8, 16, 32] and len(df) == 5
    assert [p.name for p, _ in skipped] == [bad.name] and skipped[0][1]


def test_every_column_of_a_row_round_trips(tmp_path, tiny_case):
    """Each stored column against the case and result it came from (the info overrides the requested sizes)."""
    from datetime import datetime

    from ssmbench.case import Case

    case = tiny_case(model="mamba", backend="auto", mode="fwdbwd", batch=3, seq_len=24, d_model=32, n_layers=2)
    result = CaseResult(metrics=[Metric("time", "median", 0.5, "s", 3, samples=(0.4, 0.5, 0.6)),
                                 Metric("accuracy", "eval", 0.75, "fraction", 9, seq_len=48)],
                        info={"backend": "chunked", "params": 1234, "d_state": 16, "d_model": 48, "n_layers": 3})
    store.write_case(tmp_path, "run-7", case, result)
    df = store.load(tmp_path).set_index("metric")
    row = df.loc["time"]
    assert {k: row[k] for k in ("run_id", "case_id", "kind", "model", "backend", "scope", "mode", "device",
                                "dtype", "stat", "unit", "status")} == {
        "run_id": "run-7", "case_id": case.case_id, "kind": "speed", "model": "mamba", "backend": "chunked",
        "scope": case.scope, "mode": "fwdbwd", "device": "cpu", "dtype": "float32", "stat": "median", "unit": "s",
        "status": "ok"}
    assert (row.batch, row.seq_len, row.d_model, row.n_layers, row.d_state, row.params) == (3, 24, 48, 3, 16, 1234)
    assert (row.value, row.n_samples, list(row.samples)) == (0.5, 3, [0.4, 0.5, 0.6])
    assert pd.isna(row.task) and pd.isna(row.error) and row.schema_version == store.SCHEMA_VERSION
    assert Case.from_dict(json.loads(row.case)) == case
    assert datetime.fromisoformat(row.timestamp).tzinfo is not None
    acc = df.loc["accuracy"]
    assert (acc.seq_len, acc.stat, acc.value, acc.n_samples) == (48, "eval", 0.75, 9) and acc.samples is None
    # without sizes in the info the case's requested ones are stored, and the requested backend
    bare = tiny_case(model="transformer", d_model=64, n_layers=1, task="")
    store.write_case(tmp_path, "run-8", bare, CaseResult(status="error", error="boom"))
    b = store.load(tmp_path).set_index("run_id").loc["run-8"]
    assert (b.backend, b.d_model, b.n_layers, b.status, b.error, b.metric) == ("auto", 64, 1, "error", "boom",
                                                                              "status")


def test_run_records_round_trip(tmp_path):
    store.write_run(tmp_path, "r1", {"cpu": "x86", "threads": 2, "gpu": None}, command="ssmbench sweep", suite="s")
    (row,) = store.load_runs(tmp_path).to_dict("records")
    assert (row["run_id"], row["command"], row["suite"], row["cpu"], row["threads"], row["gpu"]) == (
        "r1", "ssmbench sweep", "s", "x86", "2", None)
    assert json.loads(row["env"]) == {"cpu": "x86", "gpu": None, "threads": 2}
    assert row["schema_version"] == store.SCHEMA_VERSION
    (tmp_path / "runs" / "r0.parquet").write_bytes(b"damaged")  # a damaged record only loses itself
    assert list(store.load_runs(tmp_path).run_id) == ["r1"]
