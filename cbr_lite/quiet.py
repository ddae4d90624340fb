"""Keeping library chatter out of notebooks and the command line, in one place.

TensorFlow, Keras, LiteRT and the TFLite converter print lines nobody asked for, several of them from
C++ straight to file descriptor 2 and with a timestamp, which nbval would compare and a CLI user would
have to read past. Everything that hides such output lives here:

- :func:`import_tensorflow_quietly`: the only place that sets ``TF_CPP_MIN_LOG_LEVEL`` in this process;
  entries call it before anything imports TensorFlow (``setup_notebook()``, the CLI commands that need
  TensorFlow, the scripts). Importing a module that needs TensorFlow without it works; you just see
  TensorFlow's lines. :func:`quiet_environment` is the same setting for a child process.
- :func:`quiet_library_logs`: TensorFlow's, absl's and fontTools' loggers to errors only, and the
  warnings those libraries emit themselves, but not warnings from your own code (a NaN in your NumPy
  still warns).
- :func:`stderr_silenced` and :func:`quietly`: for the one call that talks (the converter, LiteRT's
  start-up); :func:`cbr_lite.export.to_tflite` and :class:`cbr_lite.export.LiteRTModel` already use them.

>>> with quietly():
...     print("not shown")
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings

#: Loggers of libraries that report routine events as warnings (fontTools: the 1970-ish timestamps in
#: matplotlib's font files, every time cbr_lite.glyphs reads one).
LIBRARY_LOGGERS = ("tensorflow", "absl", "fontTools")
#: Python modules whose own warnings are library chatter (deprecations inside TensorFlow and Keras);
#: a warning attributed to any other module, a notebook's cells included, is still shown.
LIBRARY_WARNING_MODULES = r"(tensorflow|keras|tf_keras|tensorflow_hub|absl|google\.protobuf|ai_edge_litert|flatbuffers)(\.|$)"


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
    temporary SavedModel, with object ids that change every run).
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
    """Import TensorFlow and Keras without their start-up lines, unless the user asked for them.

    Sets ``TF_CPP_MIN_LOG_LEVEL`` to 3 unless it is already set; at 3 even the lines TensorFlow writes
    before it reads that variable ("All log messages before absl::InitializeLog()...") are dropped, at
    a lower level nothing is hidden. It must run before TensorFlow is first imported to have an effect
    (TensorFlow reads the variable once), and does nothing after. Keras gets the TensorFlow backend,
    which cbr-lite exports through, unless ``KERAS_BACKEND`` says otherwise.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if "tensorflow" in sys.modules or os.environ["TF_CPP_MIN_LOG_LEVEL"] != "3":
        return
    with stderr_silenced(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # only while importing: deprecation notices from inside TensorFlow
        import keras  # noqa: F401  (imports tensorflow, the backend)
        import tensorflow  # noqa: F401


def quiet_environment() -> dict[str, str]:
    """A copy of this process's environment for a child process that may load TensorFlow or LiteRT: the
    same ``TF_CPP_MIN_LOG_LEVEL`` as :func:`import_tensorflow_quietly` (3 unless the user set it).

    >>> subprocess.run([sys.executable, "probe.py"], env=quiet_environment())    # doctest: +SKIP
    """
    return {"TF_CPP_MIN_LOG_LEVEL": "3", **os.environ}


def quiet_library_logs() -> None:
    """Quiet the loggers in :data:`LIBRARY_LOGGERS` to errors, and ignore warnings raised inside the
    libraries in :data:`LIBRARY_WARNING_MODULES`; your own warnings still show."""
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=LIBRARY_WARNING_MODULES)
    if "absl.logging" in sys.modules or "tensorflow" in sys.modules:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
