"""--shard and --max-memory on sweep and run: bad values are one line and exit code 2; --shard picks a share."""

import subprocess
import sys

import pytest


def ssmbench(*args):
    return subprocess.run([sys.executable, "-m", "ssmbench", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("args", "message"), [
    (["sweep", "--models", "mamba", "--shard", "3/2", "--dry-run"], "bad --shard '3/2'"),
    (["sweep", "--models", "mamba", "--shard", "x", "--dry-run"], "expected I/N"),
    (["sweep", "--models", "mamba", "--max-memory", "lots", "--dry-run"], "bad --max-memory 'lots'"),
    (["run", "tasks/quick.toml", "--shard", "0/2", "--dry-run"], "shares are numbered from 1"),
])
def test_bad_flags_exit_2(args, message):
    r = ssmbench(*args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr.replace("\n", " ") and "Traceback" not in r.stderr


def test_shard_dry_run_lists_a_share():
    whole = ssmbench("sweep", "--models", "mamba,transformer", "-L", "64..1k", "--device", "cpu", "--dry-run")
    shares = [ssmbench("sweep", "--models", "mamba,transformer", "-L", "64..1k", "--device", "cpu", "--dry-run",
                       "--shard", f"{i}/3") for i in (1, 2, 3)]
    ids = [line.split()[0] for r in shares for line in r.stdout.splitlines() if "fwd L=" in line]
    assert sorted(ids) == sorted(line.split()[0] for line in whole.stdout.splitlines() if "fwd L=" in line)
    assert len(ids) == len(set(ids)) == 10
