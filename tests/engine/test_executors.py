import pytest

from ssmbench import store
from ssmbench.engine.executors import SlurmOptions, run_with_executor
from ssmbench.engine.runner import run_cases
from ssmbench.spec import SpecError


def test_two_local_workers_share_cases_and_keep_failures(tmp_path, tiny_case):
    cases = [tiny_case(seq_len=n) for n in (8, 16, 32)] + [tiny_case(model_options=(("fault", "raise"),))]
    summary = run_cases(cases, tmp_path, worker_envs=({}, {"SSMBENCH_TEST_SLOT": "2"}))
    assert sorted(o.result.status for o in summary.executed) == ["error", "ok", "ok", "ok"]
    assert store.load(tmp_path).case_id.nunique() == 4


@pytest.mark.slow  # tens of seconds of real measurement: `make test-slow` (CI runs it)
def test_slurm_executor_through_submitit_local_cluster(tmp_path, tiny_case):
    pytest.importorskip("submitit")
    cases = [tiny_case(seq_len=n) for n in (8, 16)] + [tiny_case(model_options=(("fault", "raise"),))]
    opts = SlurmOptions(folder=str(tmp_path / "slurm"), jobs=2, cluster="local", timeout_min=5)
    summary = run_with_executor(cases, tmp_path / "res", "slurm", slurm=opts)
    assert sorted(o.result.status for o in summary.executed) == ["error", "ok", "ok"]
    df = store.load(tmp_path / "res")
    assert df.case_id.nunique() == 3 and df.run_id.nunique() == 1
    # resume: nothing left to do
    again = run_with_executor(cases, tmp_path / "res", "slurm", slurm=opts)
    assert again.executed == []


def test_local_gpus_without_gpu_is_a_usage_error(tmp_path, tiny_case):
    import torch

    if torch.cuda.is_available():
        pytest.skip("machine has a GPU")
    with pytest.raises(SpecError, match="needs CUDA devices"):
        run_with_executor([tiny_case()], tmp_path, "local-gpus")
