from pathlib import Path

import pytest

from ssmbench import spec as spec_mod
from ssmbench.schema import load_suite
from ssmbench.spec import (
    ModelSpec,
    SpecError,
    check_device_dtype,
    check_output_dir,
    parse_lengths,
    parse_models,
    parse_modes,
    parse_size,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("1k..8k", (1024, 2048, 4096, 8192)),
    ("256..1k", (256, 512, 1024)),
    ("512,2k,8k", (512, 2048, 8192)),
    ("2k,512,2k", (512, 2048)),
    ("1m", (1048576,)),
    ("100", (100,)),
    ("64..64", (64,)),
    ("256..1000", (256, 512)),
    ("64..128,3000", (64, 128, 3000)),
], ids=lambda v: str(v))
def test_parse_lengths_good(text, expected):
    assert parse_lengths(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("64k..1k", "start 65536 is larger than end 1024"), ("12q", "bad length '12q': expected a positive integer"),
    ("0", "bad length '0': must be positive"), ("", "empty length list"), ("1k..", "bad length '': expected"),
    ("..4k", "bad length '': expected"), ("-5", "bad length '-5': expected"),
    ("3..16", "its start must be one \\(3 is not\\)"), ("1.5k", "bad length '1.5k'"), ("k", "bad length 'k'"),
])
def test_parse_lengths_bad(text, message):
    with pytest.raises(SpecError, match=message):
        parse_lengths(text)


def test_parse_lengths_messages_name_the_problem():
    with pytest.raises(SpecError, match="start 65536 is larger than end 1024"):
        parse_lengths("64k..1k")
    with pytest.raises(SpecError, match="bad length '12q'"):
        parse_lengths("12q")


def test_parse_size_suffixes():
    assert parse_size("4k") == 4096
    assert parse_size("2M") == 2 * 1024 * 1024


def test_parse_models_aliases_backends_and_dedup():
    specs = parse_models("mamba1, attention:math ,mamba")
    assert specs == (ModelSpec("mamba"), ModelSpec("transformer", "math"))
    assert str(specs[1]) == "transformer:math"


def test_parse_models_did_you_mean():
    with pytest.raises(SpecError, match="did you mean 'transformer'"):
        parse_models("transfomer")


def test_parse_models_unknown_backend_lists_known():
    with pytest.raises(SpecError, match=r"unknown backend 'cuda' for model 'mamba'.*reference"):
        parse_models("mamba:cuda")


def test_parse_models_empty():
    with pytest.raises(SpecError, match="no models given"):
        parse_models(" , ")


def test_parse_modes():
    assert parse_modes("fwd,fwdbwd") == ("fwd", "fwdbwd")
    with pytest.raises(SpecError, match="unknown mode 'bwd'"):
        parse_modes("bwd")


def test_device_dtype_combinations():
    check_device_dtype("cuda", "bfloat16")
    check_device_dtype("cpu", "float32")
    # half precision on a CPU only where it runs natively (AVX512-BF16 / AMX), not emulated
    with pytest.raises(SpecError, match="not supported on this cpu: it has none of amx_fp16"):
        check_device_dtype("cpu", "float16", flags={"avx2", "avx512f", "avx512_fp16"})
    with pytest.raises(SpecError, match="avx512_bf16, amx_bf16, bf16"):
        check_device_dtype("cpu", "bfloat16", flags=set())
    check_device_dtype("cpu", "bfloat16", flags={"asimd", "bf16"})  # an Arm CPU with the BF16 extension
    check_device_dtype("cpu", "bfloat16", flags={"avx512f", "avx512_bf16"})
    check_device_dtype("cpu", "float16", flags={"amx_fp16"})
    with pytest.raises(SpecError, match="unknown device"):
        check_device_dtype("tpu", "float32")


def test_output_dir_unwritable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SpecError, match="cannot create output directory"):
        check_output_dir(blocker / "sub")
    assert check_output_dir(tmp_path / "new").is_dir()


def test_load_suite(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('[suite]\nname = "x"\n[[sweep]]\nmodels = "mamba,transformer"\nlengths = "64..256"\n'
                 'modes = ["fwd", "fwdbwd"]\nd_model = 32\nmodel_options = { d_state = 8 }\n')
    suite = load_suite(p)
    (sweep,) = suite.sweeps
    assert suite.name == "x"
    assert sweep.lengths == (64, 128, 256)
    assert sweep.modes == ("fwd", "fwdbwd")
    assert sweep.model_options == (("d_state", 8),)


@pytest.mark.parametrize(("body", "match"), [
    ('[[sweep]]\nmodels = "mamba"\nlengths = "64"\nbogus = 1\n', "unknown key"),
    ('[[sweep]]\nmodels = "mamba"\n', "needs 'lengths'"),
    ('[[sweep]]\nmodels = "mamba"\nlengths = "64"\ndevice = "cpu"\ndtype = "float16"\n', "not supported on this cpu"),
    ('[[sweep]\n', "invalid TOML"),
    ('[other]\n', "unknown table"),
    ('[suite]\nname = "x"\n', "no \\[\\[sweep\\]\\]"),
])
def test_load_suite_bad(tmp_path, monkeypatch, body, match):
    monkeypatch.setattr(spec_mod, "cpu_flags", lambda: {"avx512f"})  # a CPU without native half precision
    p = tmp_path / "bad.toml"
    p.write_text(body)
    with pytest.raises(SpecError, match=match):
        load_suite(p)


def test_load_suite_missing_file_suggests_tasks_dir(monkeypatch, tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "quick.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError, match=r"did you mean 'tasks/quick\.toml'"):
        load_suite(Path("quick.toml"))


def test_repo_suites_parse():
    root = Path(__file__).resolve().parents[1] / "tasks"
    for path in sorted(root.glob("*.toml")):
        suite = load_suite(path)
        assert suite.sweeps or suite.accuracy, path


def test_parse_compile_modes():
    from ssmbench.spec import parse_compile

    assert parse_compile("both") == ("eager", "compiled")
    assert parse_compile("compiled, eager,compiled") == ("compiled", "eager")
    assert parse_compile(["eager"]) == ("eager",)
    with pytest.raises(SpecError, match="unknown compile mode 'fast'"):
        parse_compile("fast")
