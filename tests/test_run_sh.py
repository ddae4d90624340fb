"""run.sh uses exactly the Python that PYTHON names, or stops with one line saying why.

Each test copies run.sh into a temporary folder (it works in its own folder) and asks its ``python`` job,
which chooses the Python and the venv and sets nothing up, with fake interpreters: small shell scripts
that answer the two questions run.sh asks (``-c`` for the version, ``--version`` for the banner).
"""

import re
import shutil
import subprocess
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the test extras install its backport
    import tomli as tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASH = shutil.which("bash")
# The tools run.sh itself calls; the fake Pythons come first on PATH in each test.
TOOLS = sorted({str(Path(shutil.which(tool)).parent) for tool in ("dirname", "basename", "ls", "sort", "tail",
                                                                  "cat", "cksum")})

pytestmark = pytest.mark.skipif(BASH is None, reason="run.sh needs bash")


def fake_python(path: Path, version: str) -> Path:
    """An executable at ``path`` that reports Python ``version`` (e.g. "3.12.1")."""
    major_minor = ".".join(version.split(".")[:2])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\ncase "$1" in --version) echo "Python {version}" ;; -c) echo "{major_minor}" ;; '
                    '*) exit 3 ;; esac\n')
    path.chmod(0o755)
    return path


def failing_shim(path: Path) -> Path:
    """What a pyenv shim does for a version pyenv has not selected."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "pyenv: {path.name}: command not found" >&2\nexit 127\n')
    path.chmod(0o755)
    return path


@pytest.fixture
def project(tmp_path):
    """A folder holding a copy of run.sh, and a bin folder for fake Pythons."""
    shutil.copy(ROOT / "run.sh", tmp_path / "run.sh")
    (tmp_path / "bin").mkdir()
    return tmp_path


def run_sh(project, *arguments, python=None, path=()):
    environment = {"PATH": ":".join([*map(str, path), str(project / "bin"), *TOOLS]), "HOME": str(project)}
    if python is not None:
        environment["PYTHON"] = str(python)
    return subprocess.run([BASH, str(project / "run.sh"), *arguments], env=environment, capture_output=True,
                          text=True, timeout=60)


def test_python_names_that_python_in_a_venv_of_its_own(project):
    python = fake_python(project / "bin" / "python3.12", "3.12.4")
    done = run_sh(project, "python", python="python3.12")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"run.sh: Python 3.12.4 ({python}), venv .venv-3.12"
    assert done.stderr == ""


def test_without_python_the_newest_supported_python_that_runs_is_used_in_dot_venv(project):
    failing_shim(project / "bin" / "python3.13")
    fake_python(project / "bin" / "python3.12", "3.12.1")
    fake_python(project / "bin" / "python3.11", "3.11.7")
    done = run_sh(project, "python")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("python3.12), venv .venv")


@pytest.mark.parametrize("version", ["3.10.13", "3.13.0"])
def test_the_oldest_and_the_newest_supported_python_are_used(project, version):
    minor = ".".join(version.split(".")[:2])
    python = fake_python(project / "bin" / f"python{minor}", version)
    for other in {"python3.10", "python3.11", "python3.12", "python3.13", "python3"} - {python.name}:
        failing_shim(project / "bin" / other)  # the machine's own Pythons must not be chosen instead
    chosen = run_sh(project, "python", python=python.name)
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.strip() == f"run.sh: Python {version} ({python}), venv .venv-{minor}"
    chosen = run_sh(project, "python")
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.strip() == f"run.sh: Python {version} ({python}), venv .venv"


def test_a_failing_pyenv_shim_means_that_version_as_pyenv_installed_it(project):
    root = project / "pyenv"
    failing_shim(root / "shims" / "python3.12")
    fake_python(root / "versions" / "3.12.1" / "bin" / "python3.12", "3.12.1")
    newest = fake_python(root / "versions" / "3.12.10" / "bin" / "python3.12", "3.12.10")
    done = run_sh(project, "python", python="python3.12", path=[root / "shims"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"run.sh: Python 3.12.10 ({newest}), venv .venv-3.12"
    assert done.stderr.strip() == ("run.sh: PYTHON=python3.12 is a pyenv shim for a version pyenv has not "
                                   f"selected; using {newest}")


def test_a_relative_python_path_is_relative_to_where_run_sh_was_called(project, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    fake_python(elsewhere / "py" / "bin" / "python", "3.13.0")
    environment = {"PATH": ":".join(TOOLS), "PYTHON": "py/bin/python", "HOME": str(project)}
    done = subprocess.run([BASH, str(project / "run.sh"), "python"], cwd=elsewhere, env=environment,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"run.sh: Python 3.13.0 ({elsewhere}/py/bin/python), venv .venv-3.13"


@pytest.mark.parametrize("make, expected", [
    (lambda bin_: "python3.12", "PYTHON=python3.12: no such command; set PYTHON to Python 3.10, 3.11, 3.12 or 3.13"),
    (lambda bin_: failing_shim(bin_ / "shims" / "python3.12"), "does not run"),
    (lambda bin_: fake_python(bin_ / "python3.14", "3.14.0"), "is Python 3.14, too new: tensorflow 2.21 has no wheels"),
    (lambda bin_: fake_python(bin_ / "python3.9", "3.9.18"), "is Python 3.9, too old: cbr-lite needs Python 3.10"),
    (lambda bin_: fake_python(bin_ / "python2", "2.7.18"), "is Python 2.7, too old"),
])
def test_a_python_that_cannot_be_used_stops_run_sh_with_one_line(project, make, expected):
    failing_shim(project / "bin" / "python3")  # nothing to fall back on, and none should be tried
    fake_python(project / "bin" / "python3.11", "3.11.7")
    done = run_sh(project, "unit", python=make(project / "bin"))
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and expected in done.stderr and done.stderr.startswith("run.sh: ")
    assert not any(project.glob(".venv*")), "nothing is set up with another Python"


def test_a_venv_made_by_hand_with_another_python_is_not_reused(project):
    fake_python(project / "bin" / "python3.12", "3.12.1")
    fake_python(project / ".venv-3.12" / "bin" / "python", "3.11.7")
    done = run_sh(project, "python", python="python3.12")
    assert done.returncode == 1
    assert done.stderr.strip() == "run.sh: .venv-3.12 was made with Python 3.11, not 3.12; remove it and run again"


def test_run_sh_requires_python_and_the_classifiers_name_the_same_pythons():
    text = (ROOT / "run.sh").read_text()
    supported = re.search(r'is_supported\(\) \{\s*case "\$1" in ([\d.|]+)\)', text).group(1).split("|")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    low, high = re.fullmatch(r">=3\.(\d+),<3\.(\d+)", project["requires-python"]).groups()
    assert supported == [f"3.{minor}" for minor in range(int(low), int(high))]
    classifiers = [c.rsplit(" ", 1)[1] for c in project["classifiers"] if re.fullmatch(r".*Python :: 3\.\d+", c)]
    assert classifiers == supported
    assert f'SUPPORTED="{", ".join(supported[:-1])} or {supported[-1]}"' in text

