"""Packaging files stay usable: app.yaml for `monai-deploy package`, requirements in step with pyproject."""

import re
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from packaging.requirements import Requirement  # a dependency of pytest

tomllib = pytest.importorskip(
    "tomllib", reason="Python >= 3.11 reads pyproject.toml without extra packages"
)

REPO = Path(__file__).resolve().parents[2]
PIPELINES = REPO / "pipelines"


def _requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def _name(requirement: Requirement) -> str:
    return re.sub(r"[-_.]+", "-", requirement.name).lower()


def test_app_yaml_passes_the_packagers_reader():
    reader = pytest.importorskip(
        "holoscan_cli.packager.config_reader", reason="holoscan-cli not installed"
    )
    config = reader.ApplicationConfiguration()
    config.read(PIPELINES / "app.yaml")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert str(config._application_object["version"]) == project["version"]


def test_map_requirements_match_pyproject():
    """Every MAP requirement is a project dependency (core or the `deploy` extra), same pins."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = [
        Requirement(r)
        for r in project["dependencies"] + project["optional-dependencies"].get("deploy", [])
    ]
    declared_by_name = {_name(r): r for r in declared}
    for requirement in _requirements(PIPELINES / "requirements.txt"):
        assert _name(requirement) in declared_by_name, f"{requirement} missing from pyproject.toml"
        if any(spec.operator == "==" for spec in requirement.specifier):
            assert requirement.specifier == declared_by_name[_name(requirement)].specifier, (
                requirement
            )


def test_packaging_command_is_available_with_the_pins():
    pytest.importorskip("holoscan_cli", reason="holoscan-cli not installed")
    assert "monai-deploy" in {ep.name for ep in entry_points(group="console_scripts")}, (
        "holoscan-cli >= 4.3 dropped the `monai-deploy` command: keep holoscan-cli==4.2.0"
    )
