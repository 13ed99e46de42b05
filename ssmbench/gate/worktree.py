"""A git ref checked out in a temporary worktree, for ``ssmbench check --against REF``."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ssmbench.spec import SpecError

# Where the worker entry point lives, newest layout first: a ref from before the package layout still runs.
WORKER_MODULES = ("ssmbench/engine/worker.py", "ssmbench/worker.py")


def worker_module(tree: Path) -> str | None:
    """The importable worker module of a source tree (``ssmbench.engine.worker`` or an older layout's)."""
    for rel in WORKER_MODULES:
        if (tree / rel).is_file():
            return rel.removesuffix(".py").replace("/", ".")
    return None


def _git(args: list[str], cwd: str | os.PathLike[str]) -> str:
    r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SpecError(f"git {' '.join(args)} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    return r.stdout.strip()


@contextmanager
def git_worktree(ref: str, repo: str | os.PathLike[str] = ".") -> Iterator[tuple[Path, str]]:
    """Check ``ref`` out in a temporary detached worktree; yield (its path, the commit sha); always remove it."""
    try:
        root = _git(["rev-parse", "--show-toplevel"], repo)
    except (SpecError, OSError):
        raise SpecError(f"--against needs a git checkout; '{Path(repo).resolve()}' is not inside one") from None
    try:
        sha = _git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], root)
    except SpecError:
        raise SpecError(f"unknown git ref '{ref}' in {root}") from None
    tmp = Path(tempfile.mkdtemp(prefix="ssmbench-against-"))
    tree = tmp / "src"
    _git(["worktree", "add", "--detach", str(tree), sha], root)
    try:
        if worker_module(tree) is None:
            raise SpecError(f"ref '{ref}' ({sha[:12]}) has no ssmbench worker module: it predates the runner")
        yield tree, sha
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=root, capture_output=True)
        subprocess.run(["git", "worktree", "prune"], cwd=root, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
