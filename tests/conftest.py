"""Shared fixtures of the unit tests: a tiny deterministic embedder and small image files written with PIL;
and, when the notebooks run under nbval, an item after each one that has nbgrader grade that run.

Test modules may define fixtures of their own with the same names; pytest then uses theirs.
"""

import copy
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
from PIL import Image

# tiny_embedder (and with it TensorFlow) is imported inside the fixtures, so that test files which need
# neither do not pay for importing them.


@pytest.fixture(scope="session")
def run_python():
    """``run_python(code) -> CompletedProcess``: run Python code in a fresh interpreter from the repository
    root, with TensorFlow's log level unset (so its start-up lines would show), capturing the output."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent

    def run(code: str) -> subprocess.CompletedProcess:
        env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
        env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=root, env=env,
                              capture_output=True, text=True, timeout=120)

    return run


@pytest.fixture(scope="session")
def tiny_test_embedder():
    """The ``tiny-test`` embedder (16x16 input, 16-d output), registered with ``load_embedder``."""
    import tiny_embedder

    from cbr_lite.embedders import load_embedder

    return load_embedder(tiny_embedder.register())


@pytest.fixture
def colour_albums(tmp_path):
    """A folder of three class folders with three noisy PNG images each, in clearly different colours."""
    import tiny_embedder

    return tiny_embedder.write_albums(tmp_path / "albums")


@pytest.fixture
def write_image(tmp_path):
    """``write_image(name, array_or_pil_image, **save_options) -> path``: save an image under ``tmp_path``."""

    def write(name, image, **options):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        image.save(path, **options)
        return path

    return write


# ------------------------------------------------------------------------------------------------ nbgrader
# When pytest runs the notebooks under nbval (./run.sh test), one more item follows each notebook's cells:
# nbgrader's autograde, given exactly the outputs nbval just got from the solved notebook, must give every
# check its points. So "the solved notebooks get full marks" costs no execution beyond nbval's own.


class SolvedNotebookFullMarks(pytest.Item):
    """nbgrader grades nbval's run of a solved notebook (the cells' fresh outputs): every check gets full marks."""

    def __init__(self, *, cells, **kwargs):
        super().__init__(**kwargs)
        self.cells = cells  # nbval's items for the notebook's code cells, in order

    def runtest(self):
        from release_script import release

        not_run = [cell.name for cell in self.cells if getattr(cell, "test_outputs", None) is None]
        if not_run:
            pytest.skip(f"nbval did not run {', '.join(not_run)}: no whole run to grade")
        fresh = {id(cell.cell): cell.test_outputs for cell in self.cells}
        notebook = copy.deepcopy(self.parent.nb)
        for original, cell in zip(self.parent.nb.cells, notebook.cells):
            if cell.cell_type == "code":
                cell.outputs = copy.deepcopy(fresh[id(original)])
        path = Path(self.parent.path)
        with tempfile.TemporaryDirectory(prefix="cbr-lite-grading-") as root:
            course = release.Course(Path(root))
            course.release([path])
            graded = course.autograde(release.render(notebook), path.stem, "solved", execute=False)
        lost = [f"{g.grade_id} {g.auto_score}/{g.max_score}" for g in graded.grades if not g.manual
                and g.auto_score != g.max_score]
        assert not lost, f"{path.name}: the solved notebook lost points: {', '.join(lost)}"
        assert graded.auto_max_score > 0

    def reportinfo(self):
        return self.path, None, f"{self.path.name}::nbgrader full marks"


def pytest_collection_modifyitems(session, config, items):
    """Put a SolvedNotebookFullMarks item after the last nbval cell of every notebook with nbgrader cells."""
    by_notebook = {}
    for position, item in enumerate(items):
        if type(item).__name__ == "IPyNbCell":  # nbval's item for one code cell
            by_notebook.setdefault(item.parent, []).append(position)
    if not by_notebook:
        return
    from release_script import release

    for notebook, positions in sorted(by_notebook.items(), key=lambda pair: -pair[1][-1]):
        if release.nbgrader_cells(notebook.nb):
            cells = [items[position] for position in positions]
            grader = SolvedNotebookFullMarks.from_parent(notebook, name="nbgrader full marks", cells=cells)
            items.insert(positions[-1] + 1, grader)
