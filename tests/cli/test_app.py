"""CLI behaviour as a user sees it: exit codes, one-line errors, an end-to-end sweep and report."""

import subprocess
import sys

import pytest

from ssmbench import store
from ssmbench.spec import cpu_flags


def ssmbench(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ssmbench", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.mark.parametrize(("args", "message"), [
    (["sweep", "--models", "transfomer"], "did you mean 'transformer'"),
    (["sweep", "--models", "mamba", "--lengths", "64k..1k"], "start 65536 is larger than end 1024"),
    (["sweep", "--models", "mamba", "--lengths", "12q"], "bad length '12q'"),
    (["sweep", "--models", "mamba", "--lengths", "0"], "must be positive"),
    (["sweep", "--models", "mamba:warp"], "unknown backend 'warp'"),
    (["sweep", "--models", "mamba:triton", "--device", "cpu", "--lengths", "64"], "cannot run on cpu"),
    pytest.param(["sweep", "--models", "mamba", "--device", "cpu", "--dtype", "float16"], "not supported on this cpu",
                 marks=pytest.mark.skipif("amx_fp16" in cpu_flags(), reason="this CPU runs float16 natively")),
    (["sweep", "--models", "mamba", "--option", "d_state"], "expected KEY=VALUE"),
    (["sweep", "--models", "mamba", "--compile", "fast"], "unknown compile mode 'fast'"),
    (["run", "missing.toml"], "not found"),
    (["report", "--results", "/nonexistent/results"], "no results"),
])
def test_bad_input_exits_2_with_one_line(args, message):
    r = ssmbench(*args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr.replace("\n", " ")
    assert "Traceback" not in r.stderr


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("")
    r = ssmbench("sweep", "--models", "mamba", "--lengths", "64", "--out", str(blocker / "x"))
    assert r.returncode == 2 and "cannot create output directory" in r.stderr


def test_help_lists_commands():
    # (how fast `--help` starts is a benchmark's claim, not a test's: nothing is timed here)
    r = ssmbench("--help")
    assert r.returncode == 0
    for cmd in ("sweep", "run", "report", "models", "env", "accuracy", "generate", "check"):
        assert cmd in r.stdout


def test_end_to_end_sweep_report_and_resume(tmp_path):
    out = tmp_path / "res"
    args = ["sweep", "--models", "mamba,transformer", "--lengths", "32,64", "--tokens", "128", "--d-model", "32",
            "--n-layers", "1", "--samples", "3", "--budget", "0", "--device", "cpu", "--out", str(out)]
    r = ssmbench(*args)
    assert r.returncode == 0, r.stderr + r.stdout
    df = store.load(out)
    med = df[(df.metric == "time") & (df.stat == "median")]
    assert len(med) == 4 and (med.value > 0).all() and set(med.status) == {"ok"}
    assert set(med.batch * med.seq_len) == {128}
    r2 = ssmbench(*args)
    assert r2.returncode == 0 and "0 case(s) run" in r2.stdout and "skipped" in r2.stderr
    rep = ssmbench("report", "--results", str(out))
    assert rep.returncode == 0, rep.stderr
    assert (out / "report" / "report.md").exists()
    assert list((out / "report").glob("speed_fwd_cpu_float32_*.png"))


def test_failed_case_exits_1_but_keeps_results(tmp_path):
    out = tmp_path / "res"
    r = ssmbench("sweep", "--models", "faulty,transformer", "--option", "fault=raise", "--lengths", "16",
                 "--tokens", "32", "--d-model", "32", "--n-layers", "1", "--samples", "2", "--budget", "0",
                 "--out", str(out))
    assert r.returncode == 1
    df = store.load(out)
    assert set(df.drop_duplicates("case_id").status) == {"error", "ok"}


def test_models_and_env_commands():
    r = ssmbench("models")
    assert r.returncode == 0 and "transformer" in r.stdout and "mamba" in r.stdout and "faulty" not in r.stdout
    r = ssmbench("env")
    assert r.returncode == 0 and "torch" in r.stdout and "selective_scan" in r.stdout
