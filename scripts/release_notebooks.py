"""Release the notebooks with nbgrader: write the student copies, and grade notebooks the way a course would.

The solved notebooks ``notebooks/NN_*.ipynb`` are nbgrader *source* notebooks (CONTRIBUTING.md, "Exercises"):
each exercise's answer cell holds the solution between ``### BEGIN SOLUTION`` and ``### END SOLUTION``, a
locked test cell checks the answer, and written answers are manually graded markdown cells. This script puts
each notebook into an nbgrader course directory as an assignment of its own (named after the notebook), runs
``nbgrader generate_assignment`` and writes the released copies to ``notebooks/student/``: solutions replaced
by ``raise NotImplementedError()``, outputs cleared, test cells locked. It also shows the answer cells (the
solved notebooks collapse them) and drops saved widget state, so a copy changes only when its notebook does.

    python scripts/release_notebooks.py                # (re)write notebooks/student/
    python scripts/release_notebooks.py --check        # exit 1 if a copy is missing, stale or orphaned
    python scripts/release_notebooks.py --course DIR   # also leave a ready nbgrader course in DIR

In a course left by ``--course``, ``release/NN_name/`` is what to hand out; put a student's notebook in
``submitted/STUDENT/NN_name/`` and run ``nbgrader autograde NN_name`` in DIR (README.md, "The notebooks").
``tests/test_released_notebooks.py`` checks the copies are current and autogrades them.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from a checkout: import this checkout's cbr_lite

from cbr_lite.files import write_atomically  # noqa: E402

COURSE_ID = "cbr-lite"
# Every notebook runs in well under this; nbgrader's default (30 s a cell) is too short for the embedders.
CELL_TIMEOUT_S = 600
# Per-cell metadata that records one particular run (nbclient's timings) or how the cell was last viewed.
_RUN_METADATA = ("execution", "collapsed", "scrolled")


def source_notebooks(notebooks_dir: Path) -> list[Path]:
    """The solved notebooks, ``NN_*.ipynb``, sorted."""
    return sorted(path for path in Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb") if path.is_file())


def nbgrader_cells(notebook) -> list:
    """The cells of a parsed notebook that carry nbgrader metadata, in order."""
    return [cell for cell in notebook.cells if "nbgrader" in cell.get("metadata", {})]


@dataclass(frozen=True)
class Grade:
    """One graded cell's result: points given automatically (None: waits for a person) out of ``max_score``."""

    grade_id: str
    auto_score: float | None
    max_score: float
    manual: bool  # a written answer (an nbgrader solution cell that is also graded), not a test cell


@dataclass(frozen=True)
class Graded:
    """What ``Course.autograde`` found: one ``Grade`` per graded cell, and the notebook as it was graded."""

    grades: list[Grade]
    notebook: nbformat.NotebookNode

    @property
    def auto_score(self) -> float:
        """Points given automatically."""
        return sum(grade.auto_score or 0 for grade in self.grades)

    @property
    def auto_max_score(self) -> float:
        """Points the test cells can give (manually graded answers not included)."""
        return sum(grade.max_score for grade in self.grades if not grade.manual)


def _configuration(root: Path, execute: bool = True) -> dict:
    """nbgrader settings for a course in ``root``; without ``execute``, autograde grades the outputs it is given."""
    settings = {
        "CourseDirectory": {"root": str(root), "course_id": COURSE_ID},
        "Execute": {"timeout": CELL_TIMEOUT_S},
        # Releasing and grading here exchange nothing with students; a folder of our own keeps nbgrader from
        # complaining that the system-wide exchange folder is not writable.
        "Exchange": {"root": str(root / "exchange")},
    }
    if not execute:
        from nbgrader.converters import Autograde
        from nbgrader.preprocessors import ClearOutput, Execute

        defaults = Autograde.class_traits()
        settings["Autograde"] = {
            "sanitize_preprocessors": [p for p in defaults["sanitize_preprocessors"].default() if p is not ClearOutput],
            "autograde_preprocessors": [p for p in defaults["autograde_preprocessors"].default() if p is not Execute],
        }
    return settings


class Course:
    """An nbgrader course directory with one assignment per notebook (``source/NN_name/NN_name.ipynb``)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "exchange").mkdir(parents=True, exist_ok=True)
        # nbgrader runs the `alembic` command of its own environment to set up the gradebook database.
        bin_dir = str(Path(sys.executable).parent)
        if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
        # `nbgrader autograde` run in the folder by hand reads this file.
        (self.root / "nbgrader_config.py").write_text(
            "c = get_config()  # noqa: F821\n"
            f"c.CourseDirectory.course_id = {COURSE_ID!r}\n"
            f"c.Execute.timeout = {CELL_TIMEOUT_S}\n",
            encoding="utf-8",
        )

    def _api(self, execute: bool = True):
        from nbgrader.apps import NbGraderAPI
        from traitlets.config import Config

        return NbGraderAPI(config=Config(_configuration(self.root, execute)))

    def release(self, notebooks: list[Path]) -> dict[str, str]:
        """Run ``generate_assignment`` for each notebook; returns notebook file name -> released copy's text."""
        api = self._api()
        released = {}
        for path in notebooks:
            assignment = path.stem
            source = self.root / "source" / assignment
            source.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, source / path.name)
            _succeed(api.generate_assignment(assignment), f"nbgrader generate_assignment {assignment}")
            released[path.name] = render(tidy_release(nbformat.read(
                self.root / "release" / assignment / path.name, as_version=4)))
        return released

    def autograde(self, notebook_text: str, assignment: str, student: str, execute: bool = True) -> Graded:
        """Submit ``notebook_text`` as ``student``'s work on ``assignment`` (released before) and autograde it.

        With ``execute=False`` nbgrader grades the outputs the notebook already has instead of running it.
        """
        from nbgrader.api import Gradebook

        submitted = self.root / "submitted" / student / assignment
        submitted.mkdir(parents=True, exist_ok=True)
        (submitted / f"{assignment}.ipynb").write_text(notebook_text, encoding="utf-8")
        api = self._api(execute)
        with _quiet_database():
            _succeed(api.autograde(assignment, student), f"nbgrader autograde {assignment} for {student}")
        graded = nbformat.read(self.root / "autograded" / student / assignment / f"{assignment}.ipynb", as_version=4)
        written = {cell.metadata.nbgrader.grade_id for cell in nbgrader_cells(graded) if cell.metadata.nbgrader.solution}
        with _quiet_database(), Gradebook(api.coursedir.db_url, course_id=COURSE_ID) as gradebook:
            found = gradebook.find_submission_notebook(assignment, assignment, student)
            grades = [Grade(g.name, g.auto_score, g.max_score, g.name in written) for g in found.grades]
        return Graded(sorted(grades, key=lambda grade: grade.grade_id), graded)


def _succeed(result: dict, what: str) -> None:
    """Raise with nbgrader's own log when one of its commands failed."""
    if not result["success"]:
        raise RuntimeError(f"{what} failed:\n{result.get('log', '')}\n{result.get('error', '')}")


@contextlib.contextmanager
def _quiet_database():
    """SQLAlchemy warns about nbgrader's own session handling while it grades; that is not ours to fix."""
    from sqlalchemy.exc import SAWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=SAWarning)
        yield


def tidy_release(notebook):
    """The released notebook as we commit it: answer cells shown, run-specific metadata gone (a copy)."""
    notebook = copy.deepcopy(notebook)
    # Saved widget state belongs to one run (random model ids) and to outputs the copy does not have.
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        for key in _RUN_METADATA:
            cell.metadata.pop(key, None)
        if cell.metadata.get("nbgrader", {}).get("solution"):
            # The solved notebook collapses its solutions; the student must see the cell to answer in.
            jupyter = cell.metadata.get("jupyter", {})
            jupyter.pop("source_hidden", None)
            if not jupyter:
                cell.metadata.pop("jupyter", None)
    return notebook


def render(notebook) -> str:
    """Serialise a notebook the way Jupyter does (1-space indent, sorted keys, trailing newline)."""
    return nbformat.writes(notebook) + "\n"


def expected_copies(notebooks_dir: Path, course: Course | None = None) -> dict[Path, str]:
    """Released copy path -> the text it should have, for every solved notebook (in a temporary course if
    none is given)."""
    student_dir = Path(notebooks_dir) / "student"
    notebooks = source_notebooks(notebooks_dir)
    if course is None:
        with tempfile.TemporaryDirectory(prefix="cbr-lite-course-") as root:
            released = Course(Path(root)).release(notebooks)
    else:
        released = course.release(notebooks)
    return {student_dir / name: text for name, text in released.items()}


def problems(notebooks_dir: Path, course: Course | None = None) -> list[str]:
    """Every released copy that is missing, out of date, or has no solved notebook any more."""
    expected = expected_copies(notebooks_dir, course)
    found = []
    for path, text in expected.items():
        if not path.exists():
            found.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != text:
            found.append(f"{path}: out of date")
    student_dir = Path(notebooks_dir) / "student"
    for path in sorted(student_dir.glob("*.ipynb")) if student_dir.is_dir() else []:
        if path not in expected:
            found.append(f"{path}: no solved notebook {path.name} in {notebooks_dir}")
    return found


def write_copies(notebooks_dir: Path, course: Course | None = None) -> list[Path]:
    """(Re)write every released copy whose text changed and delete orphaned ones; returns the paths touched."""
    student_dir = Path(notebooks_dir) / "student"
    student_dir.mkdir(exist_ok=True)
    expected = expected_copies(notebooks_dir, course)
    touched = []
    for path, text in expected.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            write_atomically(path, text.encode("utf-8"))
            touched.append(path)
    for path in sorted(student_dir.glob("*.ipynb")):
        if path not in expected:
            path.unlink()
            touched.append(path)
    return touched


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if a copy needs rewriting")
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks", help="folder of NN_*.ipynb")
    parser.add_argument("--course", type=Path, help="also set up an nbgrader course in this (new or empty) folder")
    args = parser.parse_args(argv)
    if not args.notebooks.is_dir():
        print(f"release_notebooks: error: {args.notebooks}: no such folder", file=sys.stderr)
        return 2
    course = None
    if args.course is not None:
        if args.course.exists() and any(args.course.iterdir()):
            print(f"release_notebooks: error: {args.course}: not empty; give a new or empty folder", file=sys.stderr)
            return 2
        course = Course(args.course)
    if args.check:
        found = problems(args.notebooks, course)
        for line in found:
            print(line, file=sys.stderr)
        if found:
            print("run: python scripts/release_notebooks.py", file=sys.stderr)
        status = 1 if found else 0
    else:
        for path in write_copies(args.notebooks, course):
            print(f"{'wrote' if path.exists() else 'removed'} {path}")
        status = 0
    if course is not None:
        print(f"nbgrader course in {args.course}: hand out release/NN_name/, autograde submitted/STUDENT/NN_name/")
    return status


if __name__ == "__main__":
    sys.exit(main())
