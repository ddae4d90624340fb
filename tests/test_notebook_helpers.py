"""The notebooks' first cell: version checks, Colab advice, seeds, plot defaults, silence."""

import sys
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
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["numpy>=9.0", "keras<2", "pillow>=10"]\n')
    assert notebook.required_versions(pyproject) == {"numpy": ">=9.0", "keras": "<2"}


def test_a_range_counts_where_its_marker_holds(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["keras>=3.15; python_version >= \'3.11\'", '
                         '"keras>=3.12; python_version < \'3.11\'"]\n')
    assert notebook.required_versions(pyproject) == {"keras": ">=3.15" if sys.version_info >= (3, 11) else ">=3.12"}


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


def test_the_first_notebook_cell_prints_nothing(run_python):
    # nbval compares stderr too, and TensorFlow's start-up lines carry a timestamp: they must not appear.
    result = run_python("""
        from cbr_lite.notebook import setup_notebook
        setup_notebook()
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == "", (
        "TensorFlow's start-up lines reached stderr; setup_notebook() must import TensorFlow through "
        f"cbr_lite.quiet.import_tensorflow_quietly():\n{result.stderr}"
    )


def test_a_broken_tensorflow_gets_the_friendly_message(tmp_path, run_python):
    """A TensorFlow that is installed but fails to import (a mismatched NumPy, a half install) must reach
    setup_notebook's one-line advice, not an ImportError from `from cbr_lite.notebook import ...`."""
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('numpy.core.multiarray failed to import')\n")
    result = run_python(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from cbr_lite.errors import CbrError
        from cbr_lite.notebook import setup_notebook
        try:
            setup_notebook()
        except CbrError as error:
            print(error)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("TensorFlow cannot be imported (numpy.core.multiarray failed to import): ")
    assert "./run.sh lab" in result.stdout and result.stdout.count("\n") == 1


def test_setup_hides_library_warnings_but_not_yours():
    import warnings

    notebook.setup_notebook()
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn_explicit("deprecated inside Keras", DeprecationWarning, "layer.py", 1, module="keras.src.layer")
        warnings.warn_explicit("deprecated inside TF", UserWarning, "x.py", 2, module="tensorflow.python.x")
        np.log(np.array([-1.0]))  # a learner's NaN
        warnings.warn("my own warning", RuntimeWarning)
    shown = [str(w.message) for w in seen]
    assert "my own warning" in shown and any("invalid value" in message for message in shown), shown
    assert not any("deprecated inside" in message for message in shown), shown


def test_library_loggers_are_quieted_to_errors():
    import logging

    notebook.setup_notebook()
    for name in ("tensorflow", "absl", "fontTools"):
        assert logging.getLogger(name).getEffectiveLevel() >= logging.ERROR, name
