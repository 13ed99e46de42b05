"""Ctrl-C during a sweep: exit 130, a one-line note, every finished case saved, and a re-run resumes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from ssmbench import store
from ssmbench.engine.runner import plan_sweep, select_pending
from ssmbench.spec import SweepSpec, parse_models


def test_ctrl_c_exits_130_and_keeps_every_finished_case(tmp_path):
    out = tmp_path / "res"
    # per length: the transformer finishes, then the faulty model hangs (until Ctrl-C)
    args = ["sweep", "--models", "transformer,faulty", "--option", "fault=hang", "--lengths", "8", "--tokens", "16",
            "--d-model", "32", "--n-layers", "1", "--samples", "2", "--warmup", "1", "--budget", "0",
            "--device", "cpu", "--threads", "1", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "ssmbench", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list((out / "parts").glob("*.parquet")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        time.sleep(1.0)  # the hanging case has started in the worker
        os.kill(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # never leave the sweep (or its hanging worker) behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the worker, if it outlived its parent
    assert proc.returncode == 130, stderr
    text = " ".join(stderr.split())
    assert "interrupted: 1 finished case(s) are saved" in text and "Traceback" not in stderr
    df = store.load(out)
    assert set(df.model) == {"transformer"} and set(df.status) == {"ok"}
    assert not list((out / "parts").glob(".*"))  # no partial part of the interrupted case
    spec = SweepSpec(models=parse_models("transformer,faulty"), lengths=(8,), tokens=16, d_model=32, n_layers=1,
                     samples=2, warmup=1, budget_s=0.0, device="cpu", threads=1,
                     model_options=(("fault", "hang"),))
    to_run, done = select_pending(plan_sweep(spec), out, resume=True, force=False, retry_failed=False)
    assert [c.model for c in done] == ["transformer"] and [c.model for c in to_run] == ["faulty"]


def test_sigterm_during_a_command_without_its_own_message_still_says_so(tmp_path):
    # generate has no interrupt handling of its own: the CLI's entry point reports it and exits as the shell would
    args = ["generate", "--model", "mamba", "--prompt-len", "8", "--new-tokens", "1000000", "--d-model", "16",
            "--n-layers", "1", "--device", "cpu"]
    proc = subprocess.Popen([sys.executable, "-m", "ssmbench", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        time.sleep(8.0)  # imports, model build, decoding
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in err
    assert [x for x in err.splitlines() if x.startswith("interrupted by SIGTERM: stopped before finishing")]
