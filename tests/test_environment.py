"""environment.yml (conda, Binder) must list the same dependencies as pyproject.toml.

Compared: the names and version specifiers of the runtime dependencies and of the `book` and
`test` extras, and Python's lower bound. Names are normalised (lowercase, `_` and `.` -> `-`), and
conda names that differ from pip names are mapped (`pytorch` is pip's `torch`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the backport, where it is installed
    tomllib = pytest.importorskip("tomli")
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("book", "test")
CONDA_TO_PIP = {"pytorch": "torch", "matplotlib-base": "matplotlib"}
NOT_DEPENDENCIES = {"pip"}  # conda's own tooling


def normalise(name: str) -> str:
    name = re.sub(r"[-_.]+", "-", name.strip().lower())
    return CONDA_TO_PIP.get(name, name)


def specifier(spec: str) -> str:
    """A canonical text of a version specifier set: sorted, without spaces."""
    return ",".join(sorted(str(s) for s in SpecifierSet(spec.replace(" ", ""))))


def pyproject_requirements(pyproject: dict, extras=EXTRAS) -> dict[str, str]:
    project = pyproject["project"]
    lines = list(project.get("dependencies", []))
    for extra in extras:
        lines += project.get("optional-dependencies", {}).get(extra, [])
    reqs = {}
    for line in lines:
        req = Requirement(line)
        reqs[normalise(req.name)] = specifier(str(req.specifier))
    reqs["python"] = specifier(project.get("requires-python", ""))
    return reqs


def _conda_requirement(line: str) -> tuple[str, str]:
    # conda match specs as written here: "name", "name>=1.0", "name >=1.0,<2" (no channel, build)
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", line)
    if not match:
        raise ValueError(f"unsupported conda dependency {line!r}")
    name, spec = match.groups()
    if re.match(r"=[^=]", spec):  # conda's fuzzy "=1.2" has no pip equivalent: refuse it
        raise ValueError(f"use >= bounds in environment.yml, not {line!r}")
    return normalise(name), specifier(spec)


def environment_requirements(env: dict) -> dict[str, str]:
    reqs = {}
    for dep in env.get("dependencies", []):
        if isinstance(dep, dict):
            for line in dep.get("pip", []):
                if line.strip().startswith("-"):
                    raise ValueError(f"pip options have no place here: {line!r}")
                req = Requirement(line)
                reqs[normalise(req.name)] = specifier(str(req.specifier))
        else:
            name, spec = _conda_requirement(dep)
            if name not in NOT_DEPENDENCIES:
                reqs[name] = spec
    return reqs


def drift(pyproject: dict, env: dict) -> list[str]:
    """Every difference between the two files, as readable lines; empty when they agree."""
    want, have = pyproject_requirements(pyproject), environment_requirements(env)
    problems = []
    for name in sorted(want.keys() - have.keys()):
        problems.append(f"{name}{want[name]} is in pyproject.toml but not in environment.yml")
    for name in sorted(have.keys() - want.keys()):
        problems.append(f"{name}{have[name]} is in environment.yml but not in pyproject.toml")
    for name in sorted(want.keys() & have.keys()):
        if want[name] != have[name]:
            problems.append(f"{name}: pyproject.toml says {want[name] or 'any version'!r}, "
                            f"environment.yml says {have[name] or 'any version'!r}")
    return problems


def test_environment_yml_matches_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] == "mmlab-book"
    assert drift(pyproject, env) == []


# --- the comparison itself must be able to fail -----------------------------------------------
PYPROJECT = {
    "project": {
        "requires-python": ">=3.10",
        "dependencies": ["torch>=2.2", "numpy>=1.24"],
        "optional-dependencies": {"book": ["jupyter-book>=1.0,<2"], "test": ["PyYAML>=6.0"],
                                  "dev": ["ruff"]},
    }
}


def test_drift_is_empty_for_a_matching_pair():
    env = {"dependencies": ["python>=3.10", "pip", "pytorch>=2.2", "numpy >=1.24", "pyyaml>=6.0",
                            {"pip": ["jupyter_book<2,>=1.0"]}]}
    assert drift(PYPROJECT, env) == []


def test_drift_reports_every_kind_of_difference():
    env = {"dependencies": ["python>=3.9", "pip", "pytorch>=2.1", "pyyaml>=6.0", "scipy",
                            {"pip": ["jupyter-book>=1.0"]}]}
    problems = drift(PYPROJECT, env)
    text = "\n".join(problems)
    assert "python: pyproject.toml says '>=3.10', environment.yml says '>=3.9'" in text
    assert "torch: pyproject.toml says '>=2.2', environment.yml says '>=2.1'" in text
    assert "numpy>=1.24 is in pyproject.toml but not in environment.yml" in text
    assert "scipy is in environment.yml but not in pyproject.toml" in text
    assert "jupyter-book: pyproject.toml says '<2,>=1.0'" in text  # the upper bound went missing
    assert len(problems) == 5  # "dev" extras are not part of the comparison


def test_conda_fuzzy_pins_are_refused():
    with pytest.raises(ValueError, match=">= bounds"):
        environment_requirements({"dependencies": ["numpy=1.24"]})
