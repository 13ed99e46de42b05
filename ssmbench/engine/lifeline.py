"""A worker dies with its parent, whatever kills the parent (SIGTERM, SIGKILL, a second Ctrl-C, a crash).

Two independent mechanisms, because either alone has a gap:

- Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``): the kernel kills the worker the moment its
  parent exits, even while the worker is deep in a C kernel or asleep. Set from the child, so there is a window
  between ``fork`` and ``prctl`` in which the parent may already have died; checking ``getppid()`` against the
  expected parent right after setting it closes that window.
- The command pipe: when the parent dies, the write end it held closes and the worker's read end reports POLLHUP.
  A daemon thread waits for that and exits the process, so a worker notices a dead parent even where prctl does not
  exist (other Unixes) or the parent's death was not a process exit the kernel reports (a parent *thread* exiting).

Both end the worker with ``os._exit``: no cleanup handlers, no traceback, no half-written output (the worker
never writes results; the parent does).
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading

PARENT_ENV = "SSMBENCH_PARENT_PID"  # the runner passes its pid so the worker can check it was not orphaned
_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent exits (Linux only). True if set."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def exit_if_orphaned(expected_parent: int | None) -> None:
    """Exit at once if the parent that started us is gone (we were re-parented to init or a subreaper)."""
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(0)


def watch_pipe(fd: int) -> threading.Thread:
    """A daemon thread that exits the process when the other end of pipe ``fd`` closes (the parent died).

    It only polls for hang-up (event mask 0: POLLHUP/POLLERR are always reported), never reads, so the messages
    on the pipe stay for the main thread.
    """

    def wait_for_hangup() -> None:
        poller = select.poll()
        poller.register(fd, 0)
        while True:
            try:
                events = poller.poll()
            except InterruptedError:  # pragma: no cover - retried by Python since 3.5; kept for clarity
                continue
            if any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in events):
                os._exit(0)

    thread = threading.Thread(target=wait_for_hangup, name="ssmbench-lifeline", daemon=True)
    thread.start()
    return thread


def tie_to_parent(read_fd: int) -> None:
    """Everything a worker does at start-up so that it never outlives the runner that started it."""
    raw = os.environ.get(PARENT_ENV, "")
    expected = int(raw) if raw.isdigit() else None
    set_parent_death_signal()
    exit_if_orphaned(expected)
    watch_pipe(read_fd)
