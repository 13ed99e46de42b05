"""The stored baseline stays valid when Case grows: the committed CI baseline still judges tasks/ci.toml."""

from dataclasses import replace
from pathlib import Path

import ssmbench
from ssmbench.case import _ID_IF_SET
from ssmbench.gate import run as gate
from ssmbench.gate.baseline import case_key, check_compatible, read_baseline

REPO = Path(ssmbench.__file__).resolve().parent.parent


def test_committed_baseline_covers_the_ci_suite():
    plan = gate.plan_check(REPO / "tasks" / "ci.toml")
    baseline = read_baseline(REPO / "results" / "baselines" / "ci.parquet")
    check_compatible(baseline, suite=plan.suite.name, suite_path=plan.suite.path, cases=plan.cases)  # no SpecError


def test_fields_added_later_leave_the_key_alone_at_their_defaults(tiny_case):
    case = tiny_case()
    assert _ID_IF_SET  # e.g. search, max_memory
    for name, default in _ID_IF_SET.items():
        assert getattr(case, name) == default
        changed = replace(case, **{name: "x" if isinstance(default, str) else 1})
        assert case_key(changed) != case_key(case)


def _baseline_file(path, meta: bytes | None, columns=("key", "samples")):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ssmbench.gate.baseline import META_KEY

    data = {"key": ["k"], "samples": [[1.0, 2.0]], "x": [1]}
    table = pa.table({c: data[c] for c in columns})
    pq.write_table(table.replace_schema_metadata({META_KEY: meta} if meta is not None else {}), path)
    return path


def test_damaged_baseline_metadata_is_one_clear_error(tmp_path):
    import json

    import pytest

    from ssmbench.spec import SpecError

    good_cal = {"device": "cpu", "threads": 1, "matmul_s": 1e-3, "memory_s": 1e-3, "n_samples": 3}
    cases = [
        (b"{not json", "damaged metadata (not a JSON object)"),
        (b"[1, 2]", "damaged metadata (not a JSON object)"),
        (json.dumps({"format": "1", "calibration": good_cal}).encode(), "has format '1'"),
        (json.dumps({"format": 1}).encode(), "no usable machine calibration"),
        (json.dumps({"format": 1, "calibration": {"device": "cpu"}}).encode(), "no usable machine calibration"),
    ]
    for i, (meta, message) in enumerate(cases):
        with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
            read_baseline(_baseline_file(tmp_path / f"b{i}.parquet", meta))
    meta = json.dumps({"format": 1, "calibration": good_cal}).encode()
    with pytest.raises(SpecError, match="lacks the column"):
        read_baseline(_baseline_file(tmp_path / "c.parquet", meta, columns=("key", "x")))
    assert read_baseline(_baseline_file(tmp_path / "ok.parquet", meta)).samples == {"k": [1.0, 2.0]}
