"""The notebooks' first cell: version checks, Colab advice, seeds, plot defaults, silence."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cbr_lite import notebook
from cbr_lite.errors import CbrError

ROOT = Path(__file__).resolve().parent.parent


def test_a_matching_environment_has_no_problems():
    ranges = {"numpy": ">=1.26,<3", "keras": ">=3.15,<4"}
    assert notebook.version_problems((3, 11), {"numpy": "2.1.0", "keras": "3.15.1"}, ranges) == []


def test_each_problem_is_named_with_the_range_wanted():
    ranges = {"numpy": ">=1.26,<3", "keras": ">=3.15,<4", "tensorflow": ">=2.21,<2.22"}
    problems = notebook.version_problems((3, 9), {"numpy": "1.20.0", "keras": "3.15.0"}, ranges)
    assert problems == [
        "Python 3.9 is too old (cbr-lite needs 3.10 or newer)",
        "numpy 1.20.0 is installed but cbr-lite needs >=1.26,<3",
        "tensorflow is not installed (cbr-lite needs >=2.21,<2.22)",
    ]


def test_upper_bounds_are_checked_too():
    problems = notebook.version_problems((3, 12), {"tensorflow": "2.22.0"}, {"tensorflow": ">=2.21,<2.22"})
    assert problems == ["tensorflow 2.22.0 is installed but cbr-lite needs >=2.21,<2.22"]


def test_the_ranges_come_from_pyproject(tmp_path):
    if sys.version_info < (3, 11):
        pytest.skip("reading pyproject.toml needs tomllib (Python 3.11+); 3.10 reads the installed metadata")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["numpy>=9.0", "keras<2", "pillow>=10"]\n')
    assert notebook.required_versions(pyproject) == {"numpy": ">=9.0", "keras": "<2"}


def test_the_repository_pins_every_checked_package():
    assert set(notebook.required_versions()) == set(notebook.CHECKED_PACKAGES)


def test_a_bad_environment_says_what_to_run(monkeypatch):
    problem = "keras 2.15.0 is installed but cbr-lite needs >=3.15,<4"
    monkeypatch.setattr(notebook, "version_problems", lambda: [problem])
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    with pytest.raises(CbrError, match=r"keras 2\.15\.0 .*: run \./run\.sh lab"):
        notebook.setup_notebook()


def test_colab_is_told_to_install_the_package(monkeypatch):
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab-20250101")
    assert notebook.in_colab()
    assert "pip install" in notebook.how_to_fix() and "run.sh" not in notebook.how_to_fix()
    monkeypatch.delenv("COLAB_RELEASE_TAG")
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert not notebook.in_colab()


def test_seeds_make_reruns_identical():
    import keras

    notebook.setup_notebook(seed=7)
    first = np.random.rand(4), keras.random.uniform((4,)).numpy()
    notebook.setup_notebook(seed=7)
    second = np.random.rand(4), keras.random.uniform((4,)).numpy()
    notebook.setup_notebook(seed=8)
    other = np.random.rand(4)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], other)


def test_plot_defaults_are_set():
    import matplotlib as mpl

    mpl.rcParams["figure.figsize"] = (1.0, 1.0)
    notebook.set_plot_defaults()
    assert tuple(mpl.rcParams["figure.figsize"]) == (6.0, 4.0)
    assert mpl.rcParams["axes.grid"] is False


def _run(code: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_silencers_drop_python_and_c_level_writes_only_inside():
    # A bare cbr_lite package object lets cbr_lite.notebook load without TensorFlow (seconds saved).
    result = _run(f"""
        import os, sys, types
        package = types.ModuleType("cbr_lite")
        package.__path__ = [{str(ROOT / "cbr_lite")!r}]
        sys.modules["cbr_lite"] = package
        from cbr_lite.notebook import quietly, stderr_silenced
        with stderr_silenced():
            os.write(2, b"hidden")
        os.write(2, b"shown")
        with quietly():
            print("python out"); print("python err", file=sys.stderr)
            os.write(1, b"c out"); os.write(2, b"c err")
        print("after", flush=True)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "shown"
    assert result.stdout == "after\n"


def test_the_first_notebook_cell_prints_nothing():
    # nbval compares stderr too, and TensorFlow's start-up lines carry a timestamp: they must not appear.
    result = _run("""
        from cbr_lite.notebook import setup_notebook
        setup_notebook()
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == "", (
        "TensorFlow's start-up lines reached stderr; cbr_lite/__init__.py must call "
        f"cbr_lite.notebook.import_tensorflow_quietly() before it imports keras:\n{result.stderr}"
    )


def test_library_loggers_are_quieted_to_errors():
    import logging

    notebook.setup_notebook()
    for name in ("tensorflow", "absl", "fontTools"):
        assert logging.getLogger(name).getEffectiveLevel() >= logging.ERROR, name
