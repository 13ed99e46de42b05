"""Backend bookkeeping: the quick (probe-free) availability that ``ssmbench models`` lists."""

from ssmbench.kernels._backend import Backend, quick_status


def test_quick_status_checks_requirements_without_probing():
    backends = (
        Backend("plain", "x:y"),
        Backend("present", "x:y", requires=("json", "cmd:sh"), probe="no.such.module:probe"),
        Backend("absent", "x:y", devices=("cuda",), requires=("json", "no_such_module_xyz", "cmd:no-such-cmd-xyz")),
    )
    status = {s.name: s for s in quick_status(backends)}
    assert status["plain"].available and status["present"].available  # the probe is never imported
    assert not status["absent"].available
    assert status["absent"].reason == "not installed: no_such_module_xyz, no-such-cmd-xyz"
    assert status["absent"].devices == ("cuda",)
