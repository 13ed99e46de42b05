"""Skip-after-OOM: once a series runs out of memory at a length, its longer lengths are recorded, not run."""

from __future__ import annotations

import dataclasses

from ssmbench.case import Case
from ssmbench.store import CaseResult


def series_key(case: Case) -> str:
    """A case's series: every field but the length (model, backend, mode, dtype, batch, sizes, options...)."""
    data = {k: v for k, v in dataclasses.asdict(case).items() if k not in ("seq_len", "timeout_s", "search")}
    return repr(sorted(data.items()))


class OomSkipper:
    """After a series runs out of memory at length L, its longer lengths are not run but recorded as skipped.

    A longer sequence of the same series needs at least as much memory in every family here (activations grow
    with L at a fixed batch), so running it would only spend minutes to fail the same way.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.oom_at: dict[str, tuple[int, str]] = {}  # series -> (shortest length that ran out of memory, label)

    def record(self, case: Case, result: CaseResult) -> None:
        if self.enabled and result.status == "oom":
            key = series_key(case)
            if key not in self.oom_at or case.seq_len < self.oom_at[key][0]:
                self.oom_at[key] = (case.seq_len, case.label())

    def skip(self, case: Case) -> CaseResult | None:
        hit = self.oom_at.get(series_key(case)) if self.enabled else None
        if hit is None or case.seq_len <= hit[0]:
            return None
        return CaseResult(status="skipped", error=f"skipped after OOM: {hit[1]} ran out of memory "
                                                  "(--no-skip-after-oom runs it anyway)")
