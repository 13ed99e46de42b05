"""Fault injection through the real CLI in subprocesses: a parent killed mid-case, damaged and unwritable results
directories, a full disk, two sweeps on one directory. Real mechanisms (signals, chmod, an injected ENOSPC at the
write boundary), tiny cases of the test-only ``faulty`` model so the module stays fast.
"""

from __future__ import annotations

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
