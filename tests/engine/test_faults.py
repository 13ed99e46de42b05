"""Fault injection through the real CLI in subprocesses: a parent killed mid-case, damaged and unwritable results
directories, a full disk, two sweeps on one directory. Real mechanisms (signals, chmod, an injected ENOSPC at the
write boundary), tiny cases of the test-only ``faulty`` model so the module stays fast.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--tokens", "32", "--d-model", "16", "--n-layers", "1", "--samples", "2", "--budget", "0", "--warmup", "0",
        "--device", "cpu", "--threads", "1"]
# Two quick cases, then one that hangs (timeout 4 s): a parent killed during the hang has two cases to keep.
SUITE = """[[sweep]]
models = "faulty"
lengths = "16,32"
tokens = 32
d_model = 16
n_layers = 1
samples = 2
budget_s = 0
warmup = 0
device = "cpu"
threads = 1

[[sweep]]
models = "faulty"
lengths = "16"
model_options = { fault = "hang" }
tokens = 32
d_model = 16
n_layers = 1
device = "cpu"
threads = 1
timeout_s = 4
"""


def ssmbench(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssmbench", *args], capture_output=True, text=True, timeout=120,
                          **kw)


def live_session(sid: int) -> list[str]:
    """Every live process of session ``sid``, as ``ps`` lists them (zombies are dead: their parent is gone and the
    container's init has not reaped them yet)."""
    rows = subprocess.run(["ps", "-eo", "pid=,sid=,stat=,args="], capture_output=True, text=True).stdout
    return [r for r in rows.splitlines() if r.split()[1] == str(sid) and not r.split()[2].startswith("Z")]


def part_ids(out: Path) -> list[str]:
    return sorted(pq.read_table(p, columns=["case_id"]).column("case_id")[0].as_py()
                  for p in (out / "parts").glob("*.parquet"))


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL", "double SIGINT"])
def test_parent_death_leaves_no_worker_and_resume_runs_each_case_once(tmp_path, how):
    suite, out = tmp_path / "s.toml", tmp_path / "res"
    suite.write_text(SUITE)
    parent = subprocess.Popen([sys.executable, "-m", "ssmbench", "run", str(suite), "--out", str(out)],
                              start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the two quick cases are saved and the worker is inside the hanging one
        wait_for(lambda: len(list((out / "parts").glob("*.parquet"))) == 2 and len(live_session(parent.pid)) >= 2)
        time.sleep(0.3)
        if how == "double SIGINT":
            parent.send_signal(signal.SIGINT)
            time.sleep(0.05)
            parent.send_signal(signal.SIGINT)
        else:
            parent.send_signal(getattr(signal, how))
        _, err = parent.communicate(timeout=30)
    finally:
        if parent.poll() is None:
            parent.kill()
    wait_for(lambda: not live_session(parent.pid), timeout=5)  # the worker died with its parent
    assert "Traceback" not in err and "BrokenPipeError" not in err
    if how != "SIGKILL":  # a handled interrupt says what is saved and how to resume, on one line
        assert parent.returncode == (143 if how == "SIGTERM" else 130)
        (line,) = [x for x in err.splitlines() if "interrupted" in x]
        assert "2 finished case(s) are saved" in line and "run the same command again to resume" in line
    first = part_ids(out)
    assert len(first) == 2
    if how != "SIGKILL":  # resuming is the same after every kind of death; once is enough for a fast suite
        return
    resumed = ssmbench("run", str(suite), "--out", str(out))
    assert "1 case(s) run" in resumed.stdout, resumed.stdout + resumed.stderr  # only the unfinished case ran
    ids = part_ids(out)
    assert len(ids) == len(set(ids)) == 3 and set(first) < set(ids)


def sweep_args(out: Path, lengths: str = "16,32,64") -> list[str]:
    return ["sweep", "--models", "faulty", "--lengths", lengths, *TINY, "--out", str(out)]


def test_damaged_parts_are_named_by_report_and_quarantined_and_rerun_by_sweep(tmp_path):
    out = tmp_path / "res"
    assert ssmbench(*sweep_args(out)).returncode == 0
    parts = sorted((out / "parts").glob("*.parquet"))
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~_umask() for p in parts)  # the umask, not mkstemp's 0600
    parts[0].write_bytes(parts[0].read_bytes()[:100])  # truncated
    (out / "parts" / "notes.parquet").write_text("not parquet at all")  # foreign
    import pyarrow as pa

    pq.write_table(pa.table({"x": [1]}), out / "parts" / "other.parquet")  # someone else's Parquet
    rep = ssmbench("report", str(out))
    assert rep.returncode == 0 and "Traceback" not in rep.stderr
    (warning,) = [x for x in rep.stderr.splitlines() if "warning" in x]
    assert "skipped 3 unreadable part file(s)" in warning and parts[0].name in warning
    assert "notes.parquet (truncated, or not a Parquet file)" in warning
    assert "other.parquet (not an ssmbench part (no case_id" in warning
    again = ssmbench(*sweep_args(out))
    assert again.returncode == 0, again.stderr
    moved = [x for x in again.stderr.splitlines() if "moved to" in x]
    assert len(moved) == 3 and all(str(out / "parts" / ".quarantine") in x for x in moved)
    assert "1 case(s) run" in again.stdout  # only the case whose part was damaged
    assert len(part_ids(out)) == 3 and len(list((out / "parts" / ".quarantine").iterdir())) == 3


def test_report_on_empty_parts_exits_2(tmp_path):
    (tmp_path / "parts").mkdir()
    r = ssmbench("report", str(tmp_path))
    assert r.returncode == 2 and "no readable results" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Runs the real CLI with pyarrow's write_table failing with ERRNO for part files after FAIL_AFTER successful ones:
# the write boundary of the store, as a full disk (ENOSPC) or a read-only remount (EROFS) would make it fail.
INJECT = """
import os, sys
import pyarrow.parquet as pq
real, calls = pq.write_table, [0]
def failing(table, where, *args, **kwargs):
    if os.sep + "parts" + os.sep in str(where):
        calls[0] += 1
        if calls[0] > int(os.environ["FAIL_AFTER"]):
            code = int(os.environ["FAIL_ERRNO"])
            raise OSError(code, os.strerror(code))
    return real(table, where, *args, **kwargs)
pq.write_table = failing
sys.argv = ["ssmbench", *sys.argv[1:]]
from ssmbench.cli import main
main()
"""


@pytest.mark.parametrize(("errno_name", "text"), [("ENOSPC", "No space left on device"),
                                                  ("EROFS", "Read-only file system")])
def test_write_failure_mid_sweep_is_one_line_and_keeps_finished_parts(tmp_path, errno_name, text):
    import errno

    out = tmp_path / "res"
    env = {**os.environ, "FAIL_AFTER": "2", "FAIL_ERRNO": str(getattr(errno, errno_name))}
    r = subprocess.run([sys.executable, "-c", INJECT, *sweep_args(out, "16,32,64,128")], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    (line,) = [x for x in r.stderr.splitlines() if "error" in x]
    assert text in line and "2 finished case(s) are saved" in line and "faulty fwd L=64" in line
    assert "1 case(s) not yet run" in line and "run the same command again to resume" in line
    assert len(part_ids(out)) == 2  # nothing finished is lost
    assert not list((out / "parts").glob(".*.tmp"))  # no temporary file left behind


def test_unwritable_results_fail_before_measuring(tmp_path):
    out = tmp_path / "res"
    out.mkdir()
    (out / "parts").write_text("")  # a file where the parts directory should be
    r = ssmbench(*sweep_args(out))
    assert r.returncode == 2 and "a file is in the way" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = ssmbench("check", "--baseline", str(out / "parts" / "b.parquet"), "--update-baseline")
    assert r.returncode == 2 and "cannot record the baseline" in r.stderr and "Traceback" not in r.stderr


def test_two_sweeps_on_one_directory_measure_each_case_once(tmp_path):
    out = tmp_path / "res"
    args = [sys.executable, "-m", "ssmbench", *sweep_args(out, "16,32,64,128")]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    second = subprocess.run(args, capture_output=True, text=True, timeout=120)
    out1, err1 = first.communicate(timeout=120)
    assert first.returncode == second.returncode == 0, err1 + second.stderr
    ran = [int(o.split(" case(s) run")[0].split()[-1]) for o in (out1, second.stdout)]
    assert sum(ran) == 4 and len(part_ids(out)) == 4  # every case measured by exactly one of them
    assert "another sweep (pid" in err1 + second.stderr
    assert not list((out / ".claims").iterdir())  # claims are released
