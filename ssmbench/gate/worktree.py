"""A git ref checked out in a temporary worktree, for ``ssmbench check --against REF``, and what its worker accepts.

The ref may be older than the working tree: its worker module may live elsewhere (:func:`worker_module`) and its
``Case`` may lack fields that were added since (the worker builds ``Case(**payload)``, which refuses unknown keys).
:func:`case_fields` reads the ref's ``Case`` fields from its source (no import), and :func:`base_payload` sends
only those: a newer field still at its default is dropped (the old code behaves as if it had that default), a
newer field set to anything else makes the case unmeasurable on that ref (it is reported as new, not compared).
"""

from __future__ import annotations

import ast
import dataclasses
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ssmbench.spec import SpecError

# Where the worker entry point lives, newest layout first: a ref from before the package layout still runs.
WORKER_MODULES = ("ssmbench/engine/worker.py", "ssmbench/worker.py")


def worker_module(tree: Path) -> str | None:
    """The importable worker module of a source tree (``ssmbench.engine.worker`` or an older layout's)."""
    for rel in WORKER_MODULES:
        if (tree / rel).is_file():
            return rel.removesuffix(".py").replace("/", ".")
    return None


def case_fields(tree: Path) -> frozenset[str] | None:
    """The field names of ``ssmbench.case.Case`` in a source tree, read with ``ast`` (the ref's code is not
    imported here); None when the file or the class cannot be found (then the payload is sent unfiltered)."""
    try:
        module = ast.parse((tree / "ssmbench" / "case.py").read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in module.body:
        if isinstance(node, ast.ClassDef) and node.name == "Case":
            return frozenset(st.target.id for st in node.body
                             if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name))
    return None


class IncompatibleCase(ValueError):
    """The case uses a field (not at its default) that the ref's ``Case`` does not have."""


def base_payload(case: Any, fields: frozenset[str] | None) -> dict[str, Any]:
    """``asdict(case)`` restricted to ``fields``; unknown fields must equal their defaults (else IncompatibleCase)."""
    data = dataclasses.asdict(case)
    if fields is None:
        return data
    unknown = [f for f in dataclasses.fields(case) if f.name not in fields]
    for f in unknown:
        missing = dataclasses.MISSING
        default = f.default_factory() if f.default_factory is not missing else f.default  # type: ignore[misc]
        if default is missing or data[f.name] != default:
            raise IncompatibleCase(f"the base's Case has no field '{f.name}' (this case sets it to "
                                   f"{data[f.name]!r}), so the base cannot run it")
        del data[f.name]
    return data


def start_worker(env: dict[str, str] | None, module: str, fields: frozenset[str] | None) -> Any:
    """A persistent ``engine.runner.WorkerProcess`` that sends each case as :func:`base_payload` (``fields``)."""
    from ssmbench.engine.runner import WorkerProcess

    class _Worker(WorkerProcess):
        def submit(self, case: Any) -> bool:
            try:
                self.send_conn.send(base_payload(case, fields))
                return True
            except OSError:
                return False

    return _Worker(env=env, module=module)


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
