"""Test suites a controller written outside paretune can run (needs ``pytest``).

:class:`ControllerConformance` holds the promises every controller keeps, and tests each
promise its :class:`~paretune.search.Capabilities` declare. In a test module::

    import pytest
    from paretune.testing import ControllerConformance

    class TestMyController(ControllerConformance):
        @pytest.fixture
        def controller(self) -> str:
            return "my_controller"  # registered with paretune.search.register_controller

        @pytest.fixture
        def controller_options(self) -> dict:
            return {"n_startup_trials": 3}  # reach the model-based path within a few trials

The suite drives real Optuna studies (in memory, and SQLite for the resume test).
"""

from paretune.testing._controllers import (
    DISCRETE_SPACE,
    MIXED_SPACE,
    ControllerConformance,
    metric_values,
)

__all__ = ["DISCRETE_SPACE", "MIXED_SPACE", "ControllerConformance", "metric_values"]
