"""A fresh install gets the versions the suite passes with (issue 39, finding 5): the README's
two set-up commands install with ``-c constraints.txt``, CI runs exactly the README's test
command, and ``constraints.txt`` pins one version of every distribution the project and its
extras name."""

from __future__ import annotations

import re

import tomllib
from packaging.requirements import Requirement

from .trained_bundle import REPO


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, list[str]]:
    pins: dict[str, list[str]] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins.setdefault(_canonical(name), []).append(version)
    return pins


def _commands() -> list[str]:
    block = re.search(
        r"## Set-up.*?```bash\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL
    ).group(1)
    return [line for line in block.splitlines() if line.startswith("pip install")]


def test_the_readme_installs_with_the_constraints_and_ci_runs_its_test_command():
    commands = _commands()
    assert len(commands) == 2
    assert all(c.startswith("pip install -c constraints.txt ") for c in commands)
    install, tests = commands[1].split(" && ")
    assert tests == "python -m pytest -q"
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    ci = [line for line in ci if line.strip() and not line.startswith("#")]
    assert install in ci and tests in ci and ci.index(install) < ci.index(tests)  # lint between


def test_every_distribution_the_project_names_is_pinned_once():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    named = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    pins = _pins()
    assert all(len(versions) == 1 for versions in pins.values()), {
        k: v for k, v in pins.items() if len(v) > 1
    }
    for requirement in map(Requirement, named):
        name = _canonical(requirement.name)
        assert name in pins, f"{name} is not in constraints.txt"
        assert requirement.specifier.contains(pins[name][0]), (
            f"{name}=={pins[name][0]} breaks {requirement}"
        )
    assert pins["torch"] == ["2.13.0"]  # the README's CPU wheel
