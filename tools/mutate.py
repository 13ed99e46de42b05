"""``make mutate``: mutation testing (mutmut) of the critical modules, one module at a time, each against the tests
that exercise it, so a run fits a 2-core machine. Usage::

    python tools/mutate.py                    # every module in TARGETS (tens of minutes)
    python tools/mutate.py gate.stats store   # some of them (names as in TARGETS)
    python tools/mutate.py --list

Each target is mutated in its own scratch copy of the tracked tree (``build/mutate/<name>/``), so the working tree
is never touched and the results stay there for review: ``cd build/mutate/<name> && mutmut browse`` (or
``mutmut show <mutant>``). A summary per target is printed and written to ``build/mutate/summary.json``.
How to read and act on survivors: docs/testing.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "mutate"

# name -> (module path, the tests that exercise it). Keep each selection to what runs in seconds: mutmut runs the
# selection once to map tests to functions, then only the covering tests per mutant.
TARGETS: dict[str, tuple[str, list[str]]] = {
    "gate.stats": ("ssmbench/gate/stats.py", ["tests/gate/test_stats.py", "tests/gate/test_verdict.py",
                                             "tests/gate/test_stats_exact.py"]),
    "store": ("ssmbench/store.py", ["tests/test_store.py", "tests/engine/test_faults.py",
                                    "tests/report/test_searches.py"]),
    "bench.timer": ("ssmbench/bench/timer.py", ["tests/bench/test_timer.py", "tests/bench/test_metrics.py"]),
    "bench.cost": ("ssmbench/bench/cost.py", ["tests/bench/test_cost.py", "tests/bench/test_peaks.py"]),
    "bench.memory": ("ssmbench/bench/memory.py", ["tests/bench/test_timer.py", "tests/bench/test_metrics.py"]),
    "bench.measure": ("ssmbench/bench/measure.py", ["tests/bench/test_metrics.py"]),
    "bench.decode": ("ssmbench/bench/decode.py", ["tests/bench/test_metrics.py", "tests/bench/test_decode.py"]),
    "bench.generate": ("ssmbench/bench/generate.py", ["tests/bench/test_metrics.py"]),
    "train.loop": ("ssmbench/train/loop.py", ["tests/train/test_loop_behaviour.py", "tests/train/test_loop.py"]),
    "engine.runner": ("ssmbench/engine/runner.py", ["tests/engine/test_runner.py"]),
    "kernels.conv": ("ssmbench/kernels/conv.py", ["tests/kernels/test_oracles.py"]),
    "kernels.mamba1.reference": ("ssmbench/kernels/mamba1/reference.py", ["tests/kernels/test_oracles.py"]),
    "kernels.mamba1.common": ("ssmbench/kernels/mamba1/_common.py",
                              ["tests/kernels/test_oracles.py", "tests/kernels/test_selective_scan.py"]),
    "kernels.mamba1.chunked": ("ssmbench/kernels/mamba1/chunked.py", ["tests/kernels/test_selective_scan.py"]),
    "kernels.mamba2.reference": ("ssmbench/kernels/mamba2/reference.py",
                                 ["tests/kernels/test_oracles.py", "tests/kernels/test_ssd.py"]),
    "kernels.mamba2.chunked": ("ssmbench/kernels/mamba2/chunked.py", ["tests/kernels/test_ssd.py"]),
    "kernels.s4.fftconv": ("ssmbench/kernels/s4/fftconv.py", ["tests/kernels/test_oracles.py",
                                                              "tests/kernels/test_s4.py"]),
}


def scratch_copy(dest: Path) -> None:
    """The tracked tree (plus untracked, not ignored files) copied to ``dest``, without the previous mutants."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, text=True,
                           capture_output=True, check=True).stdout.split("\n")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def configure(dest: Path, module: str, tests: list[str]) -> None:
    """Append a [tool.mutmut] table to the copy's pyproject.toml: mutate ``module`` only, select ``tests``."""
    text = (dest / "pyproject.toml").read_text()
    text = re.sub(r"\n\[tool\.mutmut\][^\[]*", "\n", text)
    quoted = ", ".join(json.dumps(t) for t in tests)
    text += (
        "\n[tool.mutmut]\n"
        'source_paths = ["ssmbench"]\n'
        f'only_mutate = ["{module}"]\n'
        'also_copy = ["tasks", "results/baselines"]\n'
        f"pytest_add_cli_args_test_selection = [{quoted}]\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-m", "not slow and not gpu", "-x", "-q"]\n'
        # torch is not fork-safe once a test has run: workers fork from a clean server process
        'process_isolation = "forkserver"\n'
        "use_git_change_detection = false\n"
    )
    (dest / "pyproject.toml").write_text(text)


STATUS_RE = re.compile(r"^\s*(?P<name>\S+): (?P<status>[a-z ]+?)\s*$")


# Every interpreter of the run (mutmut, its fork server, the benchmark workers the tests start) must import the
# mutated copy in ./mutants, never an editable install of ssmbench, whatever mutmut does to sys.path (it removes
# entries that resolve to its working directory): a sitecustomize on PYTHONPATH drops the editable install's import
# hook and resolves the top-level package to the copy.
SITECUSTOMIZE = """import sys
from importlib.machinery import PathFinder

MUTANTS = {mutants!r}


class MutatedSsmbench:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "ssmbench":
            return None
        sys.path_importer_cache.pop(MUTANTS, None)  # cached as missing when looked up before mutmut created it
        return PathFinder.find_spec(name, [MUTANTS])


sys.meta_path[:] = [MutatedSsmbench] + [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
"""


def mutmut(*args: str) -> list[str]:
    return [sys.executable, "-m", "mutmut", *args]


def results(dest: Path, env: dict[str, str]) -> dict[str, list[str]]:
    """mutant name per status, from ``mutmut results --all true``."""
    out = subprocess.run(mutmut("results", "--all", "true"), cwd=dest, env=env,
                         text=True, capture_output=True).stdout
    by_status: dict[str, list[str]] = {}
    for line in out.splitlines():
        if m := STATUS_RE.match(line):
            by_status.setdefault(m["status"], []).append(m["name"])
    return by_status


def run_target(name: str, children: int) -> dict[str, object]:
    module, tests = TARGETS[name]
    dest = OUT / name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    scratch_copy(dest)
    configure(dest, module, tests)
    (dest / "boot").mkdir()
    (dest / "boot" / "sitecustomize.py").write_text(SITECUSTOMIZE.format(mutants=str(dest / "mutants")))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MUTANT_UNDER_TEST")}
    # worker subprocesses the tests start import the mutated tree too (they inherit MUTANT_UNDER_TEST)
    env["PYTHONPATH"] = f"{dest / 'boot'}{os.pathsep}{dest / 'mutants'}"
    env.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.monotonic()
    run = subprocess.run(mutmut("run", "--max-children", str(children)), cwd=dest,
                         env=env, text=True, capture_output=True)
    (dest / "mutmut-run.log").write_text(run.stdout + run.stderr)
    by_status = results(dest, env)
    counts = {k: len(v) for k, v in sorted(by_status.items())}
    summary = {"module": module, "tests": tests, "seconds": round(time.monotonic() - t0), "exit_code": run.returncode,
               "counts": counts, "survived": by_status.get("survived", []),
               "no_tests": by_status.get("no tests", [])}
    total = sum(counts.values())
    print(f"{name}: {total} mutants, {counts.get('killed', 0)} killed, {counts.get('survived', 0)} survived, "
          f"{counts.get('no tests', 0)} without tests, {counts.get('timeout', 0)} timeouts "
          f"({summary['seconds']} s; details: {dest.relative_to(ROOT)})", flush=True)
    if run.returncode and not total:
        print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="names from TARGETS (default: all)")
    parser.add_argument("--list", action="store_true", help="list the targets and their tests")
    parser.add_argument("--children", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="mutants tested in parallel (default: half the cores)")
    args = parser.parse_args()
    if args.list:
        for name, (module, tests) in TARGETS.items():
            print(f"{name:28s} {module}  <-  {' '.join(tests)}")
        return 0
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        print(f"unknown target(s) {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    summary_path = OUT / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for name in args.targets or list(TARGETS):
        summary[name] = run_target(name, args.children)
        summary_path.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
