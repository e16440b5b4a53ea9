"""The search spec: what a user writes (YAML) to describe one search, validated at the boundary.

A spec names the study, where trials are stored and tracked, the objective and its metrics, the
space, the controller, the budget and the runner::

    study: quickstart
    objective:
      type: branin_currin            # a registered objective, or `python` with settings.target
      metrics:                       # optional for registered problems (they declare their own)
        - {name: f0, direction: minimize}
        - {name: f1, direction: minimize}
    controller: {name: tpe, seed: 0}
    budget: {trials: 40}
    runner: {type: local, n_jobs: 1}   # or {type: ray, resources: {cpu: 1, gpu: 0.25}}

:func:`load_spec` reads and validates a spec; every problem becomes a :class:`ConfigError` whose
``path`` names the field (``objective.metrics[0].direction``) and whose message names the value
received and what is allowed. ``paretune schema`` prints the JSON schema of :class:`SearchSpec`.
"""

from paretune.search import LocalRunnerSettings, RayRunnerSettings
from paretune.spec._dac import DACSpec, dac_json_schema, dac_section_of, run_dac_spec
from paretune.spec._load import apply_overrides, load_plugins, load_spec, read_spec
from paretune.spec._mutransfer import (
    CoordCheckFailed,
    MuTransferResult,
    TransferCell,
    run_mutransfer,
)
from paretune.spec._mutransfer_section import (
    CoordCheckSpec,
    LRGridSpec,
    MuTransferSpec,
    mutransfer_json_schema,
)
from paretune.spec._review import ReportRefresh, ReportSpec, write_study_report
from paretune.spec._search import KnownMetric, SearchSpec
from paretune.spec._sections import (
    BudgetSpec,
    ConstraintSpec,
    ControllerSpec,
    EnqueueSpec,
    MetricSpec,
    ObjectiveSpec,
    PrunerSpec,
)

__all__ = [
    "BudgetSpec",
    "ConstraintSpec",
    "ControllerSpec",
    "CoordCheckFailed",
    "CoordCheckSpec",
    "DACSpec",
    "EnqueueSpec",
    "KnownMetric",
    "LRGridSpec",
    "LocalRunnerSpec",
    "MetricSpec",
    "MuTransferResult",
    "MuTransferSpec",
    "ObjectiveSpec",
    "PrunerSpec",
    "RayRunnerSpec",
    "ReportRefresh",
    "ReportSpec",
    "SearchSpec",
    "TransferCell",
    "apply_overrides",
    "dac_json_schema",
    "dac_section_of",
    "load_plugins",
    "load_spec",
    "mutransfer_json_schema",
    "read_spec",
    "run_dac_spec",
    "run_mutransfer",
    "write_study_report",
]

# The runner sections are the runners' own settings models (registered with the runners).
LocalRunnerSpec = LocalRunnerSettings
RayRunnerSpec = RayRunnerSettings
