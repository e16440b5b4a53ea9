"""The layer contract: paretune's rooms import downward only.

spaces < objectives < trials_store < search < dashboards, testing < spec < cli (DESIGN.md,
decision 8). Every import of a paretune module counts, wherever it is written: at the top, inside
a function, or under ``TYPE_CHECKING`` (a type that needs an upward import is a design that does).
The shared base modules (``paretune._errors``, ``paretune._secrets``, ``paretune._validation``,
``paretune`` itself) import no room and may be imported from any.

A room imports another room's public names only: a private module (``paretune.objectives.
_pareto``) or a private name (``from paretune.search import _loop``) of another room is a
violation even downward; within a room, private modules are how the room is built.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import paretune

LAYERS = {
    "spaces": 0,
    "objectives": 1,
    "trials_store": 2,
    "search": 3,
    "dashboards": 4,
    "testing": 4,
    "spec": 5,
    "cli": 6,
}
BASE = {"paretune", "paretune._errors", "paretune._secrets", "paretune._validation"}


def room(module: str) -> str | None:
    """The room of a ``paretune...`` module name (``None`` for the base modules)."""
    if module in BASE:
        return None
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS:
        raise AssertionError(f"{module} is in no room of {sorted(LAYERS)}: add it to one")
    return parts[1]


def imports(path: Path, package: str) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for every paretune module that the file at ``path`` imports, and
    ``(line, module.name)`` for every private name it imports from one (a module or not)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "paretune":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] == "paretune":
                yield node.lineno, target
                for alias in node.names:
                    if _private(alias.name):
                        yield node.lineno, f"{target}.{alias.name}"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_part(module: str) -> str | None:
    """The first private segment of a room's module path (``_pareto`` of
    ``paretune.objectives._pareto``), if any."""
    return next((part for part in module.split(".")[2:] if _private(part)), None)


def violations(root: Path) -> list[str]:
    """Every upward (or sideways between rooms of one level) import below ``root``, and
    every import of another room's private module or name."""
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        module = ".".join(parts)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        source = room(module)
        for line, target in imports(path, package):
            destination = room(target)
            if source is None:
                if destination is not None and module != "paretune":
                    found.append(f"{path}:{line}: base module {module} imports {target}")
                continue
            if destination is None or destination == source:
                continue
            if LAYERS[destination] >= LAYERS[source]:
                found.append(
                    f"{path}:{line}: {module} ({source}, layer {LAYERS[source]}) imports "
                    f"{target} ({destination}, layer {LAYERS[destination]})"
                )
            elif private_part(target) is not None:
                found.append(
                    f"{path}:{line}: {module} ({source}) imports {target}, private to "
                    f"{destination} (import its public name from paretune.{destination})"
                )
    return found


def test_paretune_imports_downward_only() -> None:
    found = violations(Path(paretune.__file__).parent)
    assert not found, "upward or private imports:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("where", "line", "caught"),
    [
        ("spaces/_x.py", "from paretune.spec import SearchSpec", True),
        ("trials_store/_x.py", "import paretune.search._loop", True),
        ("trials_store/_x.py", "from ..search import run_trials", True),
        ("objectives/_x.py", "    from paretune.trials_store import hypervolume", True),
        ("dashboards/_x.py", "from paretune.testing import suite", True),
        ("search/_x.py", "from paretune.trials_store import TrialsStore", False),
        ("search/_x.py", "from paretune._errors import ConfigError", False),
        ("cli.py", "from paretune.spec import load_spec", False),
        # another room's private module or name, even downward
        ("search/_x.py", "from paretune.objectives._pareto import pareto_mask", True),
        ("search/_x.py", "import paretune.spaces.peft._layout", True),
        ("search/_x.py", "    from paretune.trials_store import _store", True),
        ("search/_x.py", "from paretune.spaces._params import FloatParam", True),
        ("search/_x.py", "from ..spaces import _params", True),
        ("cli.py", "from paretune.spec._search import SearchSpec", True),
        # a room's own private modules, the base modules, dunders
        ("search/_x.py", "from paretune.search._loop import run_trials", False),
        ("search/_x.py", "from paretune.search import _loop", False),
        ("search/_x.py", "from ._loop import run_trials", False),
        ("spaces/_x.py", "from paretune._validation import StrictModel", False),
        ("spaces/_x.py", "from paretune import _errors", False),
        ("search/_x.py", "from paretune.objectives import __doc__", False),
    ],
)
def test_the_check_catches_an_upward_import(
    tmp_path: Path, where: str, line: str, caught: bool
) -> None:
    root = tmp_path / "paretune"
    for name in ("spaces", "objectives", "trials_store", "search", "dashboards"):
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text("")
    (root / "__init__.py").write_text("from paretune._errors import ConfigError\n")
    body = f"def f():\n{line}\n" if line.startswith(" ") else f"{line}\n"
    (root / where).write_text(body)
    assert bool(violations(root)) is caught
