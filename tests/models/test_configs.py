"""The torch-free configs: analytic parameter counts equal the built models' on odd sizes and options."""

import os
import subprocess
import sys

import pytest

from ssmbench.models import count_params, make_config

CASES = [
    ("transformer", 96, 3, {}),
    ("transformer", 40, 1, {"mlp_expand": 0, "head_dim": 8}),
    ("mamba", 72, 2, {}),
    ("mamba", 50, 1, {"d_state": 7, "d_conv": 3, "expand": 3, "dt_rank": 5}),
    ("mamba2", 96, 2, {"d_state": 12, "headdim": 16, "ngroups": 2}),
    ("mamba2", 24, 1, {"expand": 1}),
    ("hybrid", 64, 5, {"attn_every": 2, "d_state": 8, "headdim": 32}),
    ("hybrid", 32, 1, {"mlp_expand": 0}),
    ("s4", 40, 2, {"d_state": 10}),
    ("s4-dplr", 24, 3, {"d_state": 6}),
]


@pytest.mark.parametrize(("name", "d_model", "n_layers", "options"), CASES)
def test_analytic_param_count_equals_the_built_model(name, d_model, n_layers, options):
    config = make_config(name, d_model=d_model, n_layers=n_layers, vocab_size=37, options=options, strict=True)
    assert config.param_count() == config.build().num_params()
    assert count_params(config) == config.param_count()


def test_models_listing_imports_neither_torch_nor_triton():
    code = ("import sys; from ssmbench.cli.app import app; sys.argv = ['ssmbench', 'models'];\n"
            "try:\n    app()\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'triton' not in sys.modules, 'imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    assert "mamba2" in r.stdout and "selective_scan:" in r.stdout
