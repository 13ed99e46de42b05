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
TINY = ["--tokens", "128", "--d-model", "16", "--n-layers", "1", "--samples", "2", "--budget", "0", "--warmup", "0",
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
    (warning,) = [x for x in rep.stderr.splitlines() if "unreadable part" in x]
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
                                                  pytest.param("EROFS", "Read-only file system",
                                                               marks=pytest.mark.slow)])
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


SW = '[[sweep]]\nmodels = "faulty"\nlengths = "16"\n'
# Every class of bad input, once on the command line and once in a suite file: exit 2, one line, no traceback.
BAD_CLI = [
    (["sweep", "--models", "faulty", "--d-model", "abc"], "--d-model"),
    (["sweep", "--models", "faulty", "--d-model", "0"], "--d-model must be >= 1"),
    (["sweep", "--models", "faulty", "--n-layers", "-1"], "--n-layers must be >= 1"),
    (["sweep", "--models", "faulty", "--samples", "0"], "--samples must be >= 1"),
    (["sweep", "--models", "faulty", "--timeout", "-5"], "--timeout must be > 0"),
    (["sweep", "--models", "faulty", "--tokens", "8q"], "bad token count '8q'"),
    (["sweep", "--models", "faulty", "--batch", "0"], "bad batch '0'"),
    (["sweep", "--models", "faulty", "--mode", "bwd"], "unknown mode 'bwd'"),
    (["sweep", "--models", "faulty", "--lengths", "99999999999999999999m"], "at most 16,777,216"),
    (["sweep", "--models", "faulty", "--option", "fautl=raise"], "did you mean 'fault'"),
    (["sweep", "--models", "mamba", "--option", "d_state=-4"], "option d_state of mamba must be an integer >= 1"),
    (["sweep", "--models", "mamba", "--option", "d_state=abc"], "option d_state of mamba must be an integer"),
    (["sweep", "--models", "faulty", "--bogus"], "No such option: --bogus"),
    (["sweep"], "Missing option '--models'"),
    (["generate", "--model", "mamba", "--option", "d_stat=3"], "did you mean 'd_state'"),
    (["generate", "--model", "mamba", "--prompt-len", "99999999999999999999m"], "at most 16,777,216"),
    (["models", "--d-model", "0"], "--d-model must be >= 1, got 0"),
    (["models", "--d-model", "-5"], "--d-model must be >= 1, got -5"),
    (["check", "--baseline", "b.parquet", "--option", "fautl=1.5", "--suite", "tasks/ci.toml"], "did you mean"),
]
BAD_SUITES = [
    (SW + 'd_model = "abc"\n', "[[sweep]] #1: d_model must be an integer"),
    (SW + "d_model = 0\n", "d_model must be >= 1"),
    (SW + "n_layers = 2.0\n", "n_layers must be an integer"),
    (SW + "samples = 0\n", "samples must be >= 1"),
    (SW + "timeout_s = -5\n", "timeout_s must be > 0"),
    (SW + 'tokens = "8q"\n', "bad token count '8q'"),
    (SW + "batch = 0\n", "bad batch '0'"),
    (SW + "mode = 5\n", "unknown mode '5'"),
    ('[[sweep]]\nmodels = "faulty"\nlengths = "99999999999999999999m"\n', "at most 16,777,216"),
    (SW + "model_options = { fautl = 1 }\n", "did you mean 'fault'"),
    ('[[sweep]]\nmodels = "mamba"\nlengths = "16"\nmodel_options = { d_state = -4 }\n', "must be an integer >= 1"),
    (SW + "bogus = 1\n", "unknown key 'bogus'"),
    ('[[sweep]]\nmodels = "faulty"\n', "needs 'lengths'"),
    ('[sweep]\nmodels = "faulty"\nlengths = "16"\n', "[sweep] must be written [[sweep]]"),
    ("[suite]\nsuite = 5\n" + SW, "unknown key 'suite'"),
    ('[[accuracy]]\ntask = "mqar"\nmodels = "faulty"\nstepz = 1\n', "did you mean 'steps'"),
    (SW + 'name = "[[sweep]] [bold]x[/bold]"\nd_model = "[red]q"\n', "d_model must be an integer, got '[red]q'"),
]


# A fast sample (one probe per mechanism: typer's own check, the schema, the option check, markup) runs always;
# the full lists run with the slow tests (tests/test_schema.py covers every suite class in-process, fast).
FAST = {"--d-model must be >= 1", "did you mean 'fault'", "No such option: --bogus", "--d-model must be >= 1, got 0",
        "[[sweep]] #1: d_model must be an integer", "[sweep] must be written [[sweep]]",
        "d_model must be an integer, got '[red]q'"}


def _sample(cases: list[tuple]) -> list:
    return [c if c[1] in FAST else pytest.param(*c, marks=pytest.mark.slow) for c in cases]


def _one_clean_line(r: subprocess.CompletedProcess, message: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert message in lines[0], lines[0]  # user text printed as is: rich markup never eats it


@pytest.mark.parametrize(("args", "message"), _sample(BAD_CLI), ids=[" ".join(a)[:50] for a, _ in BAD_CLI])
def test_bad_flags_exit_2_with_one_line(tmp_path, args, message):
    _one_clean_line(ssmbench(*args, "--out", str(tmp_path / "res")) if args[0] == "sweep" and len(args) > 1
                    else ssmbench(*args, cwd=ROOT), message)


@pytest.mark.parametrize(("body", "message"), _sample(BAD_SUITES), ids=[m[:50] for _, m in BAD_SUITES])
def test_bad_suite_values_exit_2_with_one_line(tmp_path, body, message):
    path = tmp_path / "s.toml"
    path.write_text(body)
    r = ssmbench("run", str(path), "--out", str(tmp_path / "res"))
    _one_clean_line(r, message)
    assert str(path) in r.stderr  # the message names the file (and the table and key, checked above)
    assert not (tmp_path / "res" / "parts").exists() or not list((tmp_path / "res" / "parts").iterdir())


def test_generate_out_of_memory_is_one_line():
    r = ssmbench("generate", "--model", "faulty", "--option", "fault=oom", "--prompt-len", "16", "--new-tokens", "2",
                 "--device", "cpu", "--d-model", "16", "--n-layers", "1")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "out of memory at prompt length 16" in r.stderr and "try a shorter --prompt-len" in r.stderr
