"""The first cell of every notebook: a checked, quiet, reproducible environment (notebook setup only;
the silencing itself is :mod:`cbr_lite.quiet`).

>>> from cbr_lite.notebook import setup_notebook
>>> setup_notebook()                                   # doctest: +SKIP

``setup_notebook()`` prints nothing when all is well, so notebook outputs do not depend on the machine.
When something is wrong it raises :class:`cbr_lite.errors.CbrError` with one line that says what to run.
Like handson-ml3's first cell, it checks the versions the notebooks were written for (the ranges in
``pyproject.toml``) and adapts to Google Colab.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from cbr_lite.errors import CbrError, first_line
from cbr_lite.locations import REPOSITORY_ROOT
from cbr_lite.quiet import import_tensorflow_quietly, quiet_library_logs

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the test extras install its backport
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

#: The packages whose versions the notebooks depend on (their ranges come from ``pyproject.toml``).
CHECKED_PACKAGES = ("tensorflow", "keras", "ai-edge-litert", "numpy")
MINIMUM_PYTHON = (3, 10)
DEFAULT_SEED = 42

_FIX_LOCAL = (
    "run ./run.sh lab from the cbr-lite repository (it creates .venv with the right versions and opens Jupyter)"
)
_FIX_COLAB = (
    "in Colab, install the package from the repository first: !git clone <cbr-lite repository URL> cbr-lite && "
    "pip install -q -e cbr-lite, then Runtime > Restart session"
)


def in_colab() -> bool:
    """True when running inside Google Colab (its ``google.colab`` module is already loaded there)."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def how_to_fix() -> str:
    """The one command that sets up a working environment, for where we are running."""
    return _FIX_COLAB if in_colab() else _FIX_LOCAL


def required_versions(pyproject: Path | None = None) -> dict[str, str]:
    """Version ranges of :data:`CHECKED_PACKAGES`, e.g. ``{"keras": ">=3.15,<4", ...}``.

    Read from the repository's ``pyproject.toml`` when there is one (the source of truth), otherwise from
    the installed package's metadata (which was generated from it). A range with an environment marker
    counts where its marker holds (keras's range differs on Python 3.10).
    """
    pyproject = Path(pyproject) if pyproject else REPOSITORY_ROOT / "pyproject.toml"
    lines = None
    if pyproject.is_file() and tomllib is not None:
        lines = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    if lines is None:
        try:
            lines = metadata.requires("cbr-lite") or []
        except metadata.PackageNotFoundError:
            lines = []
    ranges = {}
    for line in lines:
        requirement = Requirement(line)
        name = requirement.name.lower().replace("_", "-")
        if name in CHECKED_PACKAGES and (requirement.marker is None or requirement.marker.evaluate({"extra": ""})):
            ranges[name] = str(requirement.specifier)
    return ranges


def installed_version(package: str) -> str | None:
    """The installed version of ``package`` (a distribution name such as ``"ai-edge-litert"``), or None."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def version_problems(python: tuple = None, versions: dict | None = None, ranges: dict | None = None) -> list[str]:
    """Every way the environment differs from what the notebooks need, as short phrases (empty when fine).

    The arguments default to this interpreter, the installed packages and :func:`required_versions`;
    tests pass their own.

    >>> version_problems((3, 9), {"numpy": "1.20.0"}, {"numpy": ">=1.26,<3"})
    ['Python 3.9 is too old (cbr-lite needs 3.10 or newer)', 'numpy 1.20.0 is installed but cbr-lite needs >=1.26,<3']
    """
    python = tuple(python or sys.version_info[:2])
    ranges = required_versions() if ranges is None else ranges
    if versions is None:
        versions = {package: installed_version(package) for package in ranges}
    problems = []
    if python[:2] < MINIMUM_PYTHON:
        wanted = ".".join(map(str, MINIMUM_PYTHON))
        problems.append(f"Python {python[0]}.{python[1]} is too old (cbr-lite needs {wanted} or newer)")
    for package, specifier in sorted(ranges.items()):
        version = versions.get(package)
        if version is None:
            problems.append(f"{package} is not installed (cbr-lite needs {specifier})")
            continue
        try:
            ok = SpecifierSet(specifier).contains(Version(version), prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            problems.append(f"{package} {version} is installed but cbr-lite needs {specifier}")
    return problems


def set_plot_defaults() -> None:
    """Matplotlib defaults for the notebooks: readable sizes, no grid on images, tight saved figures."""
    import matplotlib as mpl

    mpl.rcParams.update({
        "figure.figsize": (6.0, 4.0),
        "figure.dpi": 100,
        "figure.max_open_warning": 0,
        "font.size": 10,
        "axes.titlesize": 11,
        "axes.grid": False,
        "image.cmap": "viridis",
        "image.interpolation": "nearest",
        "savefig.bbox": "tight",
    })


def _forget_keras_global_seed_generator() -> None:
    """Make unseeded ``keras.random`` calls start again from the seed just set, on every Keras.

    Keras 3.13+ does this in ``set_random_seed``; Keras 3.12 (the newest for Python 3.10) keeps the
    generator it made at the first unseeded call, so a rerun would continue its sequence.
    """
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # a Keras without this module: nothing to forget
        return
    global_state.set_global_attribute("global_seed_generator", None)


def setup_notebook(seed: int = DEFAULT_SEED, check_versions: bool = True) -> None:
    """Prepare a notebook: checked versions, TensorFlow imported quietly, library chatter off, fixed
    seeds, plot and print defaults.

    Prints nothing on success. Raises :class:`CbrError` with one line saying what is wrong and what to
    run when the Python or library versions are not the ones the notebooks were written for, or when
    TensorFlow is installed but cannot be imported. Your own warnings still show (see
    :func:`cbr_lite.quiet.quiet_library_logs`).
    """
    if check_versions:
        problems = version_problems()
        if problems:
            raise CbrError(f"{'; '.join(problems)}: {how_to_fix()}")
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != "tensorflow":
        raise CbrError(
            f"Keras was imported with the {sys.modules['keras'].backend.backend()!r} backend, but cbr-lite "
            "exports through TensorFlow: restart the kernel and run this cell first (or unset KERAS_BACKEND)"
        )
    try:
        import_tensorflow_quietly()
        import keras
    except ImportError as error:  # installed, but broken (a mismatched NumPy or protobuf, a half install)
        raise CbrError(f"TensorFlow cannot be imported ({first_line(error)}): {how_to_fix()}") from None
    import numpy as np

    quiet_library_logs()
    # Seeds Python's random, NumPy and the backend in one call, so reruns give the same numbers.
    keras.utils.set_random_seed(seed)
    _forget_keras_global_seed_generator()
    # Four decimals, no scientific notation: printed arrays read the same on every machine.
    np.set_printoptions(precision=4, suppress=True)
    set_plot_defaults()
