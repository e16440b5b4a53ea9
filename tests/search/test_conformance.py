"""Every registered controller runs :class:`paretune.testing.ControllerConformance`.

A newly registered controller is tested here without a change to this file; what it declares
(:class:`~paretune.search.Capabilities`) decides which promises are checked.
"""

from __future__ import annotations

from typing import Any

import pytest

from paretune.search import controller_names
from paretune.testing import ControllerConformance

# Options that shorten each controller's start-up so a handful of trials reaches its
# model-based path (a controller missing here runs with its defaults). ``fast`` is
# BoTorchSampler's documented cheap mode.
_OPTIONS: dict[str, dict[str, Any]] = {
    "tpe": {"n_startup_trials": 3},
    "nsga2": {"population_size": 4},
    "gp": {"n_startup_trials": 3},
    "botorch": {"fast": True, "n_startup_trials": 3},
    "reinforce": {"n_startup_trials": 3},
}

# BoTorch fits a GP per proposal: about 10 s per test on two busy cores.
_SLOW = frozenset({"botorch"})

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TestRegisteredControllers(ControllerConformance):
    @pytest.fixture(
        params=[
            pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n for n in controller_names()
        ]
    )
    def controller(self, request: pytest.FixtureRequest) -> str:
        name: str = request.param
        return name

    @pytest.fixture
    def controller_options(self, controller: str) -> dict[str, Any]:
        return _OPTIONS.get(controller, {})
