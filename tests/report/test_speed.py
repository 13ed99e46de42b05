"""The speed section's warnings about measurements that cannot be trusted."""

from __future__ import annotations

import pandas as pd

from ssmbench.report.speed import _noise_notes


def series(model: str, lengths: list[int], seq_times: list[float], rel_iqr: float = 0.05) -> pd.DataFrame:
    """Rows of one (model, backend) series at 4k tokens per batch, time per sequence ``seq_times``."""
    batch = [4096 // n for n in lengths]
    median = [t * b for t, b in zip(seq_times, batch, strict=True)]
    return pd.DataFrame({
        "model": model, "backend": "auto", "seq_len": lengths, "batch": batch, "seq_time_median": seq_times,
        "time:median": median, "time:q25": [m * (1 - rel_iqr / 2) for m in median],
        "time:q75": [m * (1 + rel_iqr / 2) for m in median]})


def test_quiet_measurements_get_no_warning() -> None:
    grp = pd.concat([series("mamba", [256, 512, 1024], [1.0, 2.1, 4.0]),
                     series("transformer", [256, 512, 1024], [1.0, 2.5, 7.0])])
    assert _noise_notes(grp) == []


def test_wide_iqr_is_reported_with_its_count() -> None:
    grp = pd.concat([series("mamba", [256, 512], [1.0, 2.0], rel_iqr=0.6), series("s4", [256, 512], [1.0, 2.0])])
    (note,) = _noise_notes(grp)
    assert "2 of 4 cases have an IQR above 25%" in note
    assert "falls" not in note


def test_time_per_sequence_falling_with_length_is_reported() -> None:
    # equal tokens per batch: a longer sequence cannot honestly cost less than a shorter one
    (note,) = _noise_notes(series("s4", [128, 256, 512], [1.0, 3.0, 1.5]))
    assert "s4 (auto) L=256→512" in note
    assert "IQR" not in note
