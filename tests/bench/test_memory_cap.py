"""memory_cap: an allocation beyond the cap fails (an OOM the worker classifies), and the limit is lifted after."""

import resource

import pytest
import torch

from ssmbench.bench.memory import memory_cap
from ssmbench.engine.worker import classify
from ssmbench.spec import SpecError, parse_bytes


def test_allocation_over_the_cap_fails_and_limit_is_restored():
    before = resource.getrlimit(resource.RLIMIT_AS)
    with memory_cap(64 * 2**20, "cpu"):
        small = torch.ones(2**20)  # 4 MiB: fits
        with pytest.raises(RuntimeError, match="allocate") as info:
            torch.ones(64 * 2**20)  # 256 MiB: over the cap
    assert classify(info.value)[0] == "oom"
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    assert torch.ones(64 * 2**20).sum().item() == 64 * 2**20 and small.numel() == 2**20


def test_no_cap_is_a_no_op():
    before = resource.getrlimit(resource.RLIMIT_AS)
    with memory_cap(0, "cpu"):
        assert resource.getrlimit(resource.RLIMIT_AS) == before


@pytest.mark.parametrize("text, expected", [("3GiB", 3 * 2**30), ("3GB", 3 * 10**9), ("3g", 3 * 2**30),
                                            ("512MiB", 512 * 2**20), ("1.5GiB", int(1.5 * 2**30)), ("4096", 4096)])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "3x", "GiB", "-1", "0", "3i"])
def test_parse_bytes_rejects(text):
    with pytest.raises(SpecError, match="max-memory"):
        parse_bytes(text)
