import math

import pandas as pd

from ssmbench import store
from ssmbench.store import CaseResult, Metric


def _ok(value: float) -> CaseResult:
    return CaseResult(metrics=[Metric("time", "median", value, "s", 3, samples=(value, value, value)),
                               Metric("tokens_per_s", "median", 32 / value, "tok/s", 3)],
                      info={"backend": "torch", "params": 123, "d_state": None})


def test_round_trip(tmp_path, tiny_case):
    case = tiny_case()
    store.write_case(tmp_path, "run1", case, _ok(0.5))
    store.write_run(tmp_path, "run1", {"cpu": "x", "torch": "2"})
    df = store.load(tmp_path)
    assert len(df) == 2
    row = df[(df.metric == "time") & (df.stat == "median")].iloc[0]
    assert row.value == 0.5 and row.case_id == case.case_id and row.params == 123 and row.backend == "torch"
    assert list(row.samples) == [0.5, 0.5, 0.5]
    assert pd.isna(row.d_state)
    # pandas reads the dataset with one call
    assert len(pd.read_parquet(tmp_path / "parts")) == 2
    runs = store.load_runs(tmp_path)
    assert runs.iloc[0].cpu == "x"


def test_rewrite_replaces_not_duplicates(tmp_path, tiny_case):
    case = tiny_case()
    store.write_case(tmp_path, "r1", case, CaseResult(status="error", error="boom"))
    store.write_case(tmp_path, "r2", case, _ok(0.25))
    df = store.load(tmp_path)
    assert set(df.run_id) == {"r2"}
    assert store.finished_cases(tmp_path) == {case.case_id: "ok"}


def test_failed_case_is_one_status_row(tmp_path, tiny_case):
    store.write_case(tmp_path, "r", tiny_case(), CaseResult(status="oom", error="OutOfMemoryError: x"))
    df = store.load(tmp_path)
    assert len(df) == 1 and df.iloc[0].status == "oom" and math.isnan(df.iloc[0].value)


def test_no_temp_files_left_and_unreadable_part_is_ignored(tmp_path, tiny_case):
    store.write_case(tmp_path, "r", tiny_case(), _ok(1.0))
    assert not list((tmp_path / "parts").glob(".*tmp"))
    (tmp_path / "parts" / "garbage.parquet").write_bytes(b"not parquet")
    assert len(store.finished_cases(tmp_path)) == 1


def test_load_empty(tmp_path):
    df = store.load(tmp_path)
    assert df.empty and "metric" in df.columns


def test_case_id_ignores_timeout_but_not_size(tiny_case):
    assert tiny_case(timeout_s=1).case_id == tiny_case(timeout_s=2).case_id
    assert tiny_case(seq_len=16).case_id != tiny_case(seq_len=32).case_id
