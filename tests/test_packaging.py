"""The two ways to install cbr-lite (pip with pyproject.toml, conda with environment.yml) must agree."""

import re
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the test extras install its backport
    import tomli as tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _normalise(requirement: str) -> str:
    """'TensorFlow >= 2.21, <2.22' -> 'tensorflow>=2.21,<2.22' (PEP 503 name, no spaces)."""
    requirement = requirement.replace(" ", "")
    name, rest = re.match(r"([A-Za-z0-9._-]+)(.*)", requirement).groups()
    return re.sub(r"[-_.]+", "-", name).lower() + rest


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def environment():
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def _pip_section(environment):
    sections = [item for item in environment["dependencies"] if isinstance(item, dict) and "pip" in item]
    assert len(sections) == 1, "environment.yml needs exactly one 'pip:' list"
    return sections[0]["pip"]


def test_environment_lists_the_same_packages_as_pyproject(pyproject, environment):
    project = pyproject["project"]
    wanted = {_normalise(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    listed = {_normalise(r) for r in _pip_section(environment) if not r.startswith("-e")}
    assert listed - wanted == set(), "in environment.yml but not in pyproject.toml"
    assert wanted - listed == set(), "in pyproject.toml but not in environment.yml"


def test_environment_installs_the_package_itself(environment):
    assert "-e ." in [entry.replace("--editable", "-e").strip() for entry in _pip_section(environment)]


def test_environment_python_is_within_requires_python(pyproject, environment):
    python = [item for item in environment["dependencies"] if isinstance(item, str) and item.startswith("python")]
    assert python, "environment.yml must pin python"
    low, high = re.match(r">=(\d+\.\d+),<(\d+\.\d+)", pyproject["project"]["requires-python"]).groups()
    assert python[0].replace(" ", "") == f"python>={low},<{high}"


def test_console_script_points_at_an_existing_function(pyproject):
    module, function = pyproject["project"]["scripts"]["cbr-lite"].split(":")
    imported = __import__(module, fromlist=[function])
    assert callable(getattr(imported, function))


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./run.sh test" in readme, "README.md must give the test command"
    assert re.search(r"^\./run\.sh test\b", ci, re.MULTILINE), ".ci/run must run the README's test command"
