"""The one input schema: suite tables and CLI flags are validated alike, before any case runs, in one line."""

from pathlib import Path

import pytest

from ssmbench.schema import Layers, Width, check_flags, check_model_options, load_suite, sweep_from_flags
from ssmbench.spec import SpecError

SWEEP = '[[sweep]]\nmodels = "mamba"\nlengths = "64"\n'

# (suite file body, words the one-line message must contain): every class of bad [[sweep]] value
BAD_SUITES = [
    (SWEEP + 'd_model = "abc"\n', "[[sweep]] #1: d_model must be an integer, got 'abc'"),
    (SWEEP + "n_layers = 2.0\n", "n_layers must be an integer, got 2.0"),
    (SWEEP + "mode = 5\n", "mode: unknown mode '5'"),
    (SWEEP + "batch = 0\n", "batch: bad batch '0': must be positive"),
    (SWEEP + "samples = 0\n", "samples must be >= 1, got 0"),
    (SWEEP + "timeout_s = -5\n", "timeout_s must be > 0"),
    (SWEEP + 'tokens = "8q"\n', "tokens: bad token count '8q'"),
    (SWEEP + "tokens = 1.5\n", "tokens must be a token count such as 8192"),
    (SWEEP + "d_model = 10000000\n", "d_model must be <= 65,536"),
    (SWEEP + 'device = "tpu"\n', "unknown device 'tpu'"),
    (SWEEP + "match_params = 1\n", "match_params must be true or false"),
    (SWEEP + "warmup = true\n", "warmup must be an integer"),
    (SWEEP + "budget_s = nan\n", "budget_s must be a finite number"),
    (SWEEP + "model_options = 3\n", "model_options must be a table"),
    (SWEEP + "model_options = { d_state = -4 }\n", "option d_state of mamba must be an integer >= 1, got -4"),
    (SWEEP + 'model_options = { d_state = "abc" }\n', "option d_state of mamba must be an integer"),
    (SWEEP + "model_options = { d_stat = 4 }\n", "unknown model option 'd_stat'; did you mean 'd_state'?"),
    (SWEEP + "modelz = 1\n", "unknown key 'modelz'"),
    (SWEEP + 'mode = "fwd"\nmodes = ["fwd"]\n', "give 'modes' or 'mode', not both"),
    ('[[sweep]]\nmodels = "mamba"\nlengths = "99999999999999999999m"\n', "at most 16,777,216"),
    ('[[sweep]]\nmodels = 5\nlengths = "64"\n', "[[sweep]] #1: models: unknown model '5'"),
    ('[[sweep]]\nmodels = "mamba"\nlengths = true\n', "lengths must be a length list"),
    ('[[sweep]]\nmodels = "mamba"\n', "needs 'lengths'"),
    ('[sweep]\nmodels = "mamba"\nlengths = "64"\n', "[sweep] must be written [[sweep]]"),
    ('[[suite]]\nname = "x"\n' + SWEEP, "[[suite]] must be written [suite]"),
    ("[suite]\nsuite = 5\n" + SWEEP, "[suite]: unknown key 'suite'"),
    ("[suite]\nname = 5\n" + SWEEP, "[suite]: name must be a string"),
    ("[suite]\nrounds = 1\n" + SWEEP, "[suite]: rounds must be >= 3"),
    ("sweep = 5\n", "'sweep' must be [[sweep]] tables"),
    ("[[accuracy]]\ntask = 'mqar'\nmodels = 'mamba'\nstepz = 1\n", "unknown key 'stepz'; did you mean 'steps'?"),
    ("accuracy = [1]\n", "[[accuracy]] #1: expected a table of keys"),
]


@pytest.mark.parametrize(("body", "message"), BAD_SUITES, ids=[m[:40] for _, m in BAD_SUITES])
def test_bad_suite_values_name_file_table_and_key(tmp_path, body, message):
    path = tmp_path / "s.toml"
    path.write_text(body)
    with pytest.raises(SpecError) as info:
        suite = load_suite(path)
        if suite.accuracy:  # [[accuracy]] keys are the planner's (its key table), checked with the shared helper
            from ssmbench.train.plan import plan_accuracy_tables

            plan_accuracy_tables(suite.accuracy, where=str(path))
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text


def test_non_utf8_and_oversized_suite_files(tmp_path):
    path = tmp_path / "s.toml"
    path.write_bytes(b'[[sweep]]\nmodels = "mamba\xff"\n')
    with pytest.raises(SpecError, match="not UTF-8 text"):
        load_suite(path)
    path.write_text("# " + "x" * (1 << 20) + "\n" + SWEEP)
    with pytest.raises(SpecError, match="too large for a suite file"):
        load_suite(path)


def test_good_suite_values_become_the_planners_spec(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[suite]\nname = "x"\nrounds = 5\n[[sweep]]\nmodels = ["mamba", "transformer"]\n'
                    'lengths = [64, "1k"]\nmode = "fwdbwd"\nbatch = [1, 2]\ntokens = "8k"\n'
                    "model_options = { d_state = 8 }\n")
    suite = load_suite(path)
    (spec,) = suite.sweeps
    assert spec.lengths == (64, 1024) and spec.modes == ("fwdbwd",) and spec.batches == (1, 2)
    assert spec.tokens == 8192 and spec.model_options == (("d_state", 8),) and spec.name == "x"
    assert suite.options["rounds"] == 5


def test_flags_use_the_same_rules_and_name_the_flag():
    spec = sweep_from_flags(models="mamba", lengths="64..256", modes="fwd", tokens="4k", batches=None)
    assert spec.lengths == (64, 128, 256) and spec.tokens == 4096
    for flags, message in [({"d_model": 0}, "--d-model must be >= 1, got 0"),
                           ({"timeout_s": -1.0}, "--timeout must be > 0"),
                           ({"budget_s": -1.0}, "--budget must be >= 0"),
                           ({"tokens": "99999999999999999999999"}, "--tokens: bad token count"),
                           ({"batches": "0"}, "--batch: bad batch '0'"),
                           ({"modes": "bwd"}, "--mode: unknown mode 'bwd'")]:
        with pytest.raises(SpecError, match=message.replace("(", r"\(")):
            sweep_from_flags(models="mamba", lengths="64", **flags)


def test_loose_flags():
    check_flags(d_model=(Width, 64), n_layers=(Layers, 2))
    with pytest.raises(SpecError, match="--d-model must be >= 1, got -5"):
        check_flags(d_model=(Width, -5))


def test_model_options_against_the_config_dataclasses():
    check_model_options("--option", {"d_state": 8}, ["mamba", "transformer"])  # a family without it skips it
    with pytest.raises(SpecError, match="transformer has no option 'd_state'"):
        check_model_options("--option", {"d_state": 8}, ["mamba", "transformer"], strict=True)
    with pytest.raises(SpecError, match="option rope of transformer must be true or false, got 1"):
        check_model_options("--option", {"rope": 1}, ["transformer"])
    with pytest.raises(SpecError, match="'d_model' is set by its own key"):
        check_model_options("--option", {"d_model": 8}, ["mamba"])
    with pytest.raises(SpecError, match="model mamba2 rejects these options"):
        check_model_options("--option", {"headdim": 48}, ["mamba2"], d_model=64)
    with pytest.raises(SpecError, match="unknown model option 'stat'"):
        check_model_options("--option", {"stat": 1}, ["mamba"])


def test_repo_suites_validate():
    for path in sorted((Path(__file__).resolve().parents[1] / "tasks").glob("*.toml")):
        assert load_suite(path).name
