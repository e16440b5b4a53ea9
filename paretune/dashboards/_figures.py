"""Figure families by name: what ``paretune report`` draws, and how a new figure joins it.

A figure family is a :class:`FigureFamily` subclass in one module, registered with
:func:`register_figure`. Its lifecycle, for every study a report is made of:

1. :meth:`~FigureFamily.applies` decides from the :class:`StudyData` whether the family has
   anything to show (a Pareto front needs two metrics; learning curves need intermediate
   values). Families that do not apply are left out of the report.
2. :meth:`~FigureFamily.extract` turns the study into the figure's data: plain Python and
   numpy, no plotly, so tests check the numbers directly.
3. :meth:`~FigureFamily.draw` turns that data into one or more ``plotly`` figures, styled by
   :func:`~paretune.dashboards.theme` (plotly is imported only here, and lazily).

Families are instantiated without arguments, once per report::

    from paretune.dashboards import FigureFamily, register_figure

    class TrialSeconds(FigureFamily):
        name = "seconds"
        title = "Seconds per trial"

        def extract(self, study):
            return [(t.number, t.duration.total_seconds()) for t in study.complete]

        def draw(self, data):
            import plotly.graph_objects as go
            return go.Figure(go.Bar(x=[n for n, _ in data], y=[s for _, s in data]))

    register_figure(TrialSeconds)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from paretune._errors import ConfigError
from paretune._validation import check_registration

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

    from paretune.dashboards._study_data import StudyData

__all__ = [
    "FigureFamily",
    "figure_family",
    "register_figure",
    "registered_figures",
    "unregister_figure",
]


class FigureFamily(ABC):
    """One kind of figure drawn from a study (see the module's docstring for the lifecycle).

    Class attributes:
        name: The registry key (``paretune report --figures pareto,hypervolume``).
        title: The section title in the report.
        order: Where the section goes in the report (smaller first).
        description: One or two sentences under the title: what the figure shows and how to
            read it.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    order: ClassVar[int] = 100
    description: ClassVar[str] = ""

    def applies(self, study: StudyData) -> bool:
        """Whether the study has anything for this family (default: a completed trial)."""
        return bool(study.complete)

    @abstractmethod
    def extract(self, study: StudyData) -> Any:
        """The figure's data from the study: plain values, no plotly."""

    @abstractmethod
    def draw(self, data: Any) -> Figure | list[Figure]:
        """The figure (or figures) of ``data``, as :meth:`extract` returned it."""


_REGISTRY: dict[str, type[FigureFamily]] = {}


def register_figure(family: type[FigureFamily], *, replace: bool = False) -> type[FigureFamily]:
    """Add ``family`` to the report, under ``family.name``. Returns it (usable as a decorator).

    Raises:
        ConfigError: ``family`` is not a :class:`FigureFamily` subclass, has no ``name`` or
            ``title``, or its name is taken (unless ``replace``).
    """
    if not (isinstance(family, type) and issubclass(family, FigureFamily)):
        raise ConfigError(f"a figure family must be a FigureFamily subclass, but got {family!r}")
    for attr in ("name", "title"):
        if not isinstance(getattr(family, attr, None), str):
            raise ConfigError(f"the figure family {family.__name__} needs a string `{attr}`")
    check_registration("figure family", _REGISTRY, family.name, family, replace=replace)
    _REGISTRY[family.name] = family
    return family


def unregister_figure(name: str) -> None:
    """Take the family ``name`` out of the report (a plugin replacing a built-in, a test).

    Raises:
        ConfigError: No family has that name.
    """
    if name not in _REGISTRY:
        raise ConfigError(f"unknown figure family {name!r}; registered: {registered_figures()}")
    del _REGISTRY[name]


def registered_figures() -> list[str]:
    """The registered family names, in report order."""
    return [f.name for f in sorted(_REGISTRY.values(), key=lambda f: (f.order, f.name))]


def figure_family(name: str) -> FigureFamily:
    """A new instance of the family registered as ``name``.

    Raises:
        ConfigError: No family has that name.
    """
    family = _REGISTRY.get(name)
    if family is None:
        raise ConfigError(
            f"unknown figure family {name!r}; registered families are {registered_figures()}. "
            "Register new ones with register_figure()."
        )
    return family()
