"""paretune: multi-objective search over how transformers are trained.

The package is organised by the question each part answers (see the design notes):

* :mod:`paretune.spaces` - what can be searched;
* :mod:`paretune.objectives` - what a trial computes;
* :mod:`paretune.search` - who proposes the next candidate and who runs it;
* :mod:`paretune.trials_store` - where trials live (Optuna study + MLflow);
* :mod:`paretune.dashboards` - how people look at the results.

``import paretune`` is cheap: heavy libraries (torch, botorch, ray, mlflow, transformers) are
imported by the functions that need them.
"""

from paretune._errors import ConfigError, ParetuneError, SearchFailed, StudyError, StudyNotFound

__all__ = [
    "ConfigError",
    "ParetuneError",
    "SearchFailed",
    "StudyError",
    "StudyNotFound",
    "__version__",
]

__version__ = "0.1.0"
