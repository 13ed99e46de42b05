import pytest
import torch

from ssmbench.registry import MODELS, TASKS, Entry, Registry, UnknownName


def test_lookup_by_alias_and_case():
    assert MODELS.get("Mamba1").name == "mamba"
    assert MODELS.get("attention").name == "transformer"


def test_unknown_name_suggests():
    with pytest.raises(UnknownName, match="did you mean 'mamba'"):
        MODELS.get("mambo")


def test_hidden_entries_resolve_but_are_not_listed():
    assert "faulty" not in MODELS.names()
    assert MODELS.get("faulty").hidden
    assert "faulty" in MODELS.names(include_hidden=True)


def test_duplicate_registration_rejected():
    reg = Registry("thing")
    reg.add(Entry("a", "x:y", aliases=("b",)))
    with pytest.raises(ValueError, match="registered twice"):
        reg.add(Entry("c", "x:y", aliases=("b",)))


def test_every_model_entry_loads_a_config_with_the_shared_fields():
    for entry in MODELS:
        config_cls = entry.load()
        model = config_cls(d_model=64, n_layers=1, vocab_size=32, backend="auto").build()
        # the shared sizes reach the built model: embedding (vocab, d_model), logits over the vocabulary
        assert tuple(model.embedding.weight.shape) == (32, 64), entry.name
        assert tuple(model(torch.zeros(1, 5, dtype=torch.long)).shape) == (1, 5, 32), entry.name


def test_listing_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from ssmbench.registry import MODELS; MODELS.names(); import ssmbench.cli; " \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_tasks_registry_is_populated():
    assert len(TASKS.names()) >= 1
