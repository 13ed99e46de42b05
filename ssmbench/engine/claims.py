"""Per-case claims: two sweeps writing to one results directory never measure the same case at the same time.

Before a case starts, the runner creates ``<root>/.claims/<case_id>.claim`` with ``O_CREAT | O_EXCL`` (atomic on
local filesystems and on NFSv3+), holding who claimed it: pid, host, run id, start time, timeout. A case claimed by
someone else is deferred, not skipped: when the claim goes away the runner either finds the other sweep's fresh
part (and uses it, without measuring again) or claims the case itself. Claims are removed when the case's part is
written, or when the sweep is interrupted.

A claim is stale, and taken over, when its holder is known to be gone: on this host, its pid no longer exists
(a sweep killed with SIGKILL leaves its claims behind); anywhere, it is older than the case's timeout plus a
margin (another host's pid cannot be checked, and a pid can be reused). Shards of one sweep on several
machines (``--shard``) claim disjoint cases, so they never wait on each other.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from ssmbench.case import Case

CLAIMS_DIR = ".claims"
_GRACE_S = 120.0  # a claim outlives its case's timeout by this much before it is stale
_HOST = socket.gethostname()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def describe(holder: dict) -> str:
    where = "" if holder.get("host") == _HOST else f" on {holder.get('host', '?')}"
    return f"another sweep (pid {holder.get('pid', '?')}{where})"


class Claims:
    """The claims this process holds under ``root``."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.dir = Path(root) / CLAIMS_DIR
        self.run_id = run_id
        self.held: set[str] = set()

    def _path(self, case: Case) -> Path:
        return self.dir / f"{case.case_id}.claim"

    def holder(self, case: Case) -> dict | None:
        """Who holds the claim on ``case`` (None if nobody, or if the holder is gone: then the claim is removed)."""
        path = self._path(case)
        try:
            holder = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # being written right now, or garbage: treat as held for now
            return {"pid": "?", "host": "?", "started": time.time(), "timeout_s": case.timeout_s}
        if self._stale(holder, case):
            # rename first: of two sweeps taking over the same stale claim only one rename succeeds
            with contextlib.suppress(OSError):
                grave = path.with_name(f"{path.name}.stale.{os.getpid()}")
                os.rename(path, grave)
                grave.unlink()
            return None
        return holder

    @staticmethod
    def _stale(holder: dict, case: Case) -> bool:
        if holder.get("host") == _HOST and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
            return True
        # no holder keeps a case past its timeout (plus a margin for starting a worker): this also frees a claim
        # whose dead holder's pid was reused, and claims from other hosts, whose pids cannot be checked
        age = time.time() - float(holder.get("started", 0))
        return age > float(holder.get("timeout_s", case.timeout_s)) + _GRACE_S

    def acquire(self, case: Case) -> bool:
        """Claim ``case``; False if another live sweep holds it."""
        if case.case_id in self.held:
            return True
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a stale claim is removed by holder(), then we race for it once more
            try:
                fd = os.open(self._path(case), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                if self.holder(case) is not None:
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": _HOST, "run_id": self.run_id, "started": time.time(),
                           "timeout_s": case.timeout_s, "case": case.label()}, f)
            self.held.add(case.case_id)
            return True
        return False

    def release(self, case: Case) -> None:
        if case.case_id in self.held:
            self.held.discard(case.case_id)
            with contextlib.suppress(OSError):
                self._path(case).unlink()

    def release_all(self) -> None:
        for case_id in list(self.held):
            self.held.discard(case_id)
            with contextlib.suppress(OSError):
                (self.dir / f"{case_id}.claim").unlink()


class ClaimedQueue:
    """The pending cases, handed out only once claimed; cases claimed elsewhere wait their turn.

    ``pop()`` returns the next case this process has claimed, or None when every remaining case is held by another
    sweep (then call ``wait()``). A deferred case whose part was written by the other sweep after this one started
    is not run again: it goes to ``done_elsewhere``.
    """

    def __init__(self, cases: Sequence[Case], claims: Claims, part_path: Callable[[Case], Path],
                 notice: Callable[[str], None] | None = None) -> None:
        self.pending = deque(cases)
        self.deferred: deque[Case] = deque()
        self.claims, self.part_path, self.notice = claims, part_path, notice
        self.started = time.time()
        self.done_elsewhere: list[Case] = []
        self._told: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.pending or self.deferred)

    def _finished_elsewhere(self, case: Case) -> bool:
        try:
            return self.part_path(case).stat().st_mtime >= self.started
        except OSError:
            return False

    def pop(self) -> Case | None:
        for queue in (self.pending, self.deferred):
            for _ in range(len(queue)):
                case = queue.popleft()
                if self._finished_elsewhere(case):
                    self.done_elsewhere.append(case)
                elif self.claims.acquire(case):
                    if self._finished_elsewhere(case):  # finished between the check and the claim
                        self.claims.release(case)
                        self.done_elsewhere.append(case)
                        continue
                    return case
                else:
                    self._tell(case)
                    self.deferred.append(case)
        return None

    def _tell(self, case: Case) -> None:
        holder = self.claims.holder(case)
        if holder is None or self.notice is None:
            return
        who = describe(holder)
        if who not in self._told:
            self._told.add(who)
            self.notice(f"{who} is measuring {case.label()} in {self.claims.dir.parent}; its cases are left to it "
                        "(this sweep waits for them and uses their results)")

    def wait(self, seconds: float = 0.5) -> None:
        time.sleep(seconds)
