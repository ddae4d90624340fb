"""The first cell of every notebook: a quiet, checked, reproducible environment.

>>> from cbr_lite.notebook import setup_notebook
>>> setup_notebook()                                   # doctest: +SKIP

``setup_notebook()`` prints nothing when all is well, so notebook outputs do not depend on the machine.
When something is wrong it raises :class:`cbr_lite.errors.CbrError` with one line that says what to run.
Like handson-ml3's first cell, it checks the versions the notebooks were written for (the ranges in
``pyproject.toml``) and adapts to Google Colab.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from pathlib import Path

from cbr_lite.errors import CbrError

#: The packages whose versions the notebooks depend on (their ranges come from ``pyproject.toml``).
CHECKED_PACKAGES = ("tensorflow", "keras", "ai-edge-litert", "numpy")
MINIMUM_PYTHON = (3, 10)
DEFAULT_SEED = 42
_REPOSITORY_ROOT = Path(__file__).resolve().parent.parent

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
    the installed package's metadata (which was generated from it).
    """
    from packaging.requirements import Requirement

    pyproject = Path(pyproject) if pyproject else _REPOSITORY_ROOT / "pyproject.toml"
    lines = None
    if pyproject.is_file() and sys.version_info >= (3, 11):
        import tomllib

        lines = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    if lines is None:
        from importlib import metadata

        try:
            lines = metadata.requires("cbr-lite") or []
        except metadata.PackageNotFoundError:
            lines = []
    ranges = {}
    for line in lines:
        requirement = Requirement(line)
        name = requirement.name.lower().replace("_", "-")
        if name in CHECKED_PACKAGES and requirement.marker is None:
            ranges[name] = str(requirement.specifier)
    return ranges


def installed_version(package: str) -> str | None:
    """The installed version of ``package`` (a distribution name such as ``"ai-edge-litert"``), or None."""
    from importlib import metadata

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
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

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


@contextlib.contextmanager
def stderr_silenced():
    """Send everything written to file descriptor 2 (C and C++ code included) to /dev/null for a while.

    TensorFlow and LiteRT print some lines from C++ before (or regardless of) ``TF_CPP_MIN_LOG_LEVEL``;
    Jupyter forwards them into the notebook's stderr, where nbval would see a timestamp that changes
    every run. Python exceptions still propagate (and are shown) after the ``with`` block.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def quietly():
    """Hide everything a block prints: Python's stdout/stderr and C-level writes to file descriptors 1 and 2.

    For library calls that talk although nobody asked (the TFLite converter prints where it saved a
    temporary SavedModel, with object ids that change every run; LiteRT announces its XNNPACK delegate).

    >>> with quietly():
    ...     print("not shown")
    """
    sink = io.StringIO()
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        with stderr_silenced(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow (and Keras) without its start-up lines, unless the user asked for them.

    Respects ``TF_CPP_MIN_LOG_LEVEL`` (set to 3 unless already set): at 3 even the lines TensorFlow
    writes before it reads that variable ("All log messages before absl::InitializeLog()...") are
    dropped; at a lower level nothing is hidden. Meant to run before anything else imports TensorFlow,
    e.g. at the top of ``cbr_lite/__init__.py``.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or os.environ["TF_CPP_MIN_LOG_LEVEL"] != "3":
        return
    with stderr_silenced(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import keras  # noqa: F401  (imports tensorflow, the backend)
        import tensorflow  # noqa: F401


def quiet_logs() -> None:
    """Silence TensorFlow's C++ and Python logs, absl and Python warnings, so notebooks' stderr stays empty.

    ``TF_CPP_MIN_LOG_LEVEL`` only works if it is set before TensorFlow is first imported, which is why
    this runs before anything imports Keras.
    """
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    # Keras' own progress bars and "compiled metrics" notes go through absl and Python warnings.
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    warnings.filterwarnings("ignore")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    # fontTools warns about odd font timestamps while cbr_lite.glyphs renders matplotlib's fonts.
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # absl comes with TensorFlow; without it there is nothing to quieten
        pass


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


def setup_notebook(seed: int = DEFAULT_SEED, check_versions: bool = True) -> None:
    """Prepare a notebook: quiet logs, checked versions, fixed seeds, plot and print defaults.

    Prints nothing on success. Raises :class:`CbrError` with one line saying what is wrong and what to
    run when the Python or library versions are not the ones the notebooks were written for.
    """
    quiet_logs()
    if check_versions:
        problems = version_problems()
        if problems:
            raise CbrError(f"{'; '.join(problems)}: {how_to_fix()}")
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != "tensorflow":
        raise CbrError(
            f"Keras was imported with the {sys.modules['keras'].backend.backend()!r} backend, but cbr-lite "
            "exports through TensorFlow: restart the kernel and run this cell first (or unset KERAS_BACKEND)"
        )
    import keras
    import numpy as np
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    # Seeds Python's random, NumPy and the backend in one call, so reruns give the same numbers.
    keras.utils.set_random_seed(seed)
    # Four decimals, no scientific notation: printed arrays read the same on every machine.
    np.set_printoptions(precision=4, suppress=True)
    set_plot_defaults()
