"""Per-case claims on a shared results directory: exclusive, released, and taken over only from the dead."""

import json
import subprocess
import sys
import time

from ssmbench.engine.claims import _HOST, ClaimedQueue, Claims


def test_a_claim_is_exclusive_until_released(tmp_path, tiny_case):
    case = tiny_case()
    mine, theirs = Claims(tmp_path, "a"), Claims(tmp_path, "b")
    assert mine.acquire(case) and mine.acquire(case)  # re-entrant for its holder
    theirs.held.clear()
    # another live process (this test's pid is alive): refused, and it says who holds the case
    assert not theirs.acquire(case)
    assert theirs.holder(case)["run_id"] == "a"
    mine.release(case)
    assert theirs.acquire(case)
    theirs.release_all()
    assert not list((tmp_path / ".claims").iterdir())


def _forge(tmp_path, case, **holder):
    path = tmp_path / ".claims" / f"{case.case_id}.claim"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": 1, "host": _HOST, "started": time.time(), "timeout_s": case.timeout_s,
                                **holder}))


def test_stale_claims_are_taken_over(tmp_path, tiny_case):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    case = tiny_case()
    _forge(tmp_path, case, pid=int(dead.stdout))  # a sweep killed with SIGKILL left it behind
    assert Claims(tmp_path, "r").acquire(case)
    other = tiny_case(seq_len=32)
    _forge(tmp_path, other, host="elsewhere", pid=123)  # another host, fresh: respected
    assert not Claims(tmp_path, "r").acquire(other)
    _forge(tmp_path, other, host="elsewhere", pid=123, started=time.time() - other.timeout_s - 1000)  # too old
    assert Claims(tmp_path, "r").acquire(other)


def test_queue_defers_claimed_cases_and_uses_results_written_meanwhile(tmp_path, tiny_case):
    a, b = tiny_case(seq_len=16), tiny_case(seq_len=32)
    _forge(tmp_path, a, host="elsewhere", pid=123)
    notices: list[str] = []
    queue = ClaimedQueue([a, b], Claims(tmp_path, "r"), lambda c: tmp_path / f"{c.case_id}.parquet", notices.append)
    assert queue.pop() == b and queue.pop() is None and queue  # a is held by the other sweep: wait for it
    assert len(notices) == 1 and "another sweep (pid 123 on elsewhere)" in notices[0]
    (tmp_path / f"{a.case_id}.parquet").write_text("")  # the other sweep finished it
    assert queue.pop() is None and not queue and queue.done_elsewhere == [a]
