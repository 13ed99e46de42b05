"""--shard partitions the case list; after an OOM the series' longer lengths are recorded as skipped."""

from dataclasses import replace

import pytest

from ssmbench import store
from ssmbench.case import Case
from ssmbench.engine.runner import plan_sweep, run_cases, shard_cases
from ssmbench.engine.skipping import OomSkipper, series_key
from ssmbench.spec import SpecError, SweepSpec, parse_models, parse_shard
from ssmbench.store import CaseResult


def _plan() -> list[Case]:
    spec = SweepSpec(models=parse_models("mamba,transformer,mamba2"), lengths=(64, 128, 256, 512, 1024),
                     modes=("fwd", "fwdbwd"), device="cpu", tokens=2048)
    return plan_sweep(spec)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 30, 31])
def test_shards_partition_the_sweep(n):
    cases = _plan()
    shares = [shard_cases(cases, (i, n)) for i in range(1, n + 1)]
    flat = [c.case_id for share in shares for c in share]
    assert len(flat) == len(set(flat))  # disjoint
    assert set(flat) == {c.case_id for c in cases}  # the union is the unsharded sweep
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced
    assert shard_cases(_plan(), (1, n)) == shares[0]  # deterministic: a re-plan gives the same share


def test_shards_write_one_results_dir_equal_to_unsharded(tmp_path, tiny_case):
    cases = [tiny_case(seq_len=length, model="faulty") for length in (8, 16, 24, 32, 40)]
    for i in (1, 2):
        run_cases(shard_cases(cases, (i, 2)), tmp_path / "sharded")
    run_cases(cases, tmp_path / "whole")
    sharded, whole = store.finished_cases(tmp_path / "sharded"), store.finished_cases(tmp_path / "whole")
    assert sharded == whole and len(whole) == 5


@pytest.mark.parametrize("text, expected", [("1/1", (1, 1)), ("2/4", (2, 4)), (None, None), ("", None)])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/4", "5/4", "1", "a/b", "1/0", "-1/2"])
def test_parse_shard_rejects(text):
    with pytest.raises(SpecError, match="--shard"):
        parse_shard(text)


def test_skipper_skips_only_longer_lengths_of_the_same_series(tiny_case):
    skipper = OomSkipper()
    oom = tiny_case(seq_len=64)
    skipper.record(oom, CaseResult(status="oom", error="out of memory"))
    assert skipper.skip(tiny_case(seq_len=32)) is None
    assert skipper.skip(tiny_case(seq_len=64)) is None
    skipped = skipper.skip(tiny_case(seq_len=128))
    assert skipped is not None and skipped.status == "skipped" and "L=64" in skipped.error
    for other in (dict(mode="fwdbwd"), dict(batch=3), dict(model="mamba"), dict(dtype="float64")):
        assert skipper.skip(tiny_case(seq_len=128, **other)) is None, other
    assert OomSkipper(enabled=False).skip(tiny_case(seq_len=128)) is None


def test_series_key_ignores_length_and_search_tag(tiny_case):
    a = tiny_case(seq_len=16)
    assert series_key(a) == series_key(replace(a, seq_len=1024, search="x", timeout_s=5))
    assert series_key(a) != series_key(replace(a, batch=4))


def test_sweep_records_skipped_after_a_real_oom(tmp_path, tiny_case):
    """A real out-of-memory under --max-memory (math attention's L² scores), then skipped rows; a healthy case
    after it still runs in the same worker with the limit lifted; --no-skip-after-oom runs them all."""
    cap = 24 * 2**20
    big = [tiny_case(model="transformer", backend="math", seq_len=length, batch=1, max_memory=cap)
           for length in (4096, 8192, 16384)]
    cases = [tiny_case(model="transformer", backend="math", seq_len=64, batch=1, max_memory=cap), *big,
             tiny_case(model="transformer", backend="math", seq_len=4096, batch=1, samples=1, warmup=0)]
    summary = run_cases(cases, tmp_path / "a")
    assert [o.result.status for o in summary.outcomes] == ["ok", "oom", "skipped", "skipped", "ok"]
    assert summary.failed == 0  # running out of a requested cap is an answer, not a failure
    df = store.load(tmp_path / "a").drop_duplicates("case_id")
    assert set(df[df.status == "skipped"].seq_len) == {8192, 16384}
    assert df[df.status == "skipped"].error.str.contains("ran out of memory").all()
    again = run_cases(big, tmp_path / "b", skip_after_oom=False)
    assert [o.result.status for o in again.outcomes] == ["oom", "oom", "oom"]


def test_cap_changes_the_case_id_only_when_set(tiny_case):
    base = tiny_case()
    assert base.case_id != replace(base, max_memory=2**30).case_id
    assert replace(base, search="").case_id == base.case_id
