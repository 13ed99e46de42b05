"""``ssmbench kernel``: one-line usage errors, and a tiny head-to-head run recorded and reported."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ssmbench import store


def ssmbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssmbench", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(("args", "message"), [
    (["kernel", "ssdd"], "unknown kernel op 'ssdd'"),
    (["kernel", "ssd", "--backends", "warp"], "unknown backend 'warp' for ssd"),
    (["kernel", "ssd", "--backends", "triton", "--device", "cpu", "-L", "64"], "cannot run on cpu"),
    (["kernel", "ssd", "--mode", "decode"], "modes fwd, fwdbwd"),
    (["kernel", "ssd", "--option", "heads=0"], "positive integers"),
    (["kernel", "selective_scan", "--option", "heads=4"], "unknown --option heads"),
])
def test_bad_input_exits_2_with_one_line(args: list[str], message: str) -> None:
    r = ssmbench(*args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr.replace("\n", " ") and "Traceback" not in r.stderr


def test_head_to_head_rows_and_report(tmp_path) -> None:
    out = tmp_path / "res"
    r = ssmbench("kernel", "ssd", "--backends", "minimal,chunked", "-L", "16,32", "--mode", "fwd",
                 "--option", "heads=2", "--option", "headdim=8", "--option", "d_state=8", "--option", "chunk=8",
                 "--samples", "2", "--budget", "0", "--device", "cpu", "--threads", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr + r.stdout
    df = store.load(out)
    med = df[(df.metric == "time") & (df.stat == "median")]
    assert len(med) == 4 and set(med.scope) == {"kernel"} and set(med.model) == {"ssd"}
    assert set(med.backend) == {"minimal", "chunked"} and (med.value > 0).all()
    r = ssmbench("report", str(out))
    assert r.returncode == 0, r.stderr
    text = next((out / "report").glob("*.md")).read_text()
    assert "## Kernels" in text and "x peer" in text
    assert "ssd (" not in text.split("## Kernels")[0]  # kernel rows stay out of the model figures and tables
