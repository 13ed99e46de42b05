"""The compiled CPU backends are required wherever they can be built.

A compiled backend that fails to build while a C++ compiler and ninja exist is a broken kernel source, so its tests
fail instead of skipping (the models would otherwise fall back to the chunked path silently). They skip only on a
machine with no toolchain, and CI sets ``SSMBENCH_REQUIRE_COMPILED=1`` (the Makefile's test target does) so that
even a missing toolchain fails there: a green CI run means the compiled backends were built and tested.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from ssmbench.kernels import _cpp

REQUIRE_ENV = "SSMBENCH_REQUIRE_COMPILED"


def require_built(probe: Callable[[], str | None]) -> None:
    """Return if ``probe()`` says the backend loads; skip only without a toolchain (and not under the switch);
    fail otherwise."""
    reason = probe()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
        pytest.fail(f"compiled backend required ({REQUIRE_ENV}={os.environ[REQUIRE_ENV]}) but unavailable: {reason}")
    if (missing := _cpp.missing_toolchain()) is not None:
        pytest.skip(f"no C++ toolchain here ({missing})")
    pytest.fail(f"the compiled backend does not build although a C++ toolchain exists: {reason}")


@pytest.fixture
def require_compiled() -> Callable[[Callable[[], str | None]], None]:
    """``require_compiled(module.probe)``: see :func:`require_built`."""
    return require_built
