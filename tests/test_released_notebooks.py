"""The exercises are gradable with nbgrader, and the released (student) copies come from it.

Checked here: every solved notebook has nbgrader exercises in the format CONTRIBUTING.md describes; the
committed copies in ``notebooks/student/`` are what ``nbgrader generate_assignment`` writes and hold no
solution text; nbgrader's autograde gives them zero and they still run top to bottom (one execution of
each). That the solved notebooks get full marks is checked on nbval's own run of them: ``tests/conftest.py``
adds an item after each notebook's cells that has nbgrader grade those outputs (no execution of its own).
"""

import re
from pathlib import Path

import nbformat
import pytest
from release_script import release

ROOT = Path(__file__).resolve().parent.parent

SOLVED = release.source_notebooks(ROOT / "notebooks")
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
# How a check may fail on a stub: the answer is missing, a stubbed function was called, or an assert failed.
CLEAN_FAILURES = {"NameError", "NotImplementedError", "AssertionError"}


def kind(cell) -> str:
    """'answer' (code to write), 'check' (locked test), 'written' (manually graded text), or 'other'."""
    meta = cell.metadata.get("nbgrader", {})
    if meta.get("solution") and meta.get("grade"):
        return "written"
    if meta.get("solution"):
        return "answer"
    if meta.get("grade"):
        return "check"
    return "other"


def split_lines(cell) -> tuple[list[str], list[str]]:
    """The stripped lines of a cell (blank ones left out): (solution lines, the others). The solution is what
    lies between the markers of an answer cell, and all of a written answer."""
    solution, others, inside = [], [], kind(cell) == "written"
    for line in cell.source.splitlines():
        if line.strip() in (BEGIN, END):
            inside = line.strip() == BEGIN
        elif line.strip():
            (solution if inside else others).append(line.strip())
    return solution, others


def solution_lines(cell) -> list[str]:
    """The stripped lines of a cell's solution (none for a cell that is not an answer)."""
    return split_lines(cell)[0]


@pytest.fixture
def notebook_run(request):
    """Tests that execute a whole notebook run with the notebooks themselves, not in ``./run.sh unit``."""
    if not request.config.getoption("nbval", default=False):
        pytest.skip("executes the notebook: runs with --nbval, as in ./run.sh test")


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A temporary nbgrader course in which every solved notebook was released (generate_assignment)."""
    course = release.Course(tmp_path_factory.mktemp("course"))
    course.released = course.release(SOLVED)
    return course


# ------------------------------------------------------------------------------------------- the format
@pytest.mark.parametrize("path", SOLVED, ids=lambda path: path.stem[:2])
def test_every_notebook_has_auto_graded_exercises_in_the_nbgrader_format(path):
    notebook = nbformat.read(path, as_version=4)
    cells = release.nbgrader_cells(notebook)
    grade_ids = [cell.metadata.nbgrader["grade_id"] for cell in cells]
    assert len(grade_ids) == len(set(grade_ids)), f"{path.name}: grade ids repeat: {grade_ids}"
    kinds = [kind(cell) for cell in cells]
    assert "answer" in kinds and "check" in kinds, f"{path.name}: needs at least one auto-graded exercise"
    for cell, cell_kind in zip(cells, kinds):
        where = f"{path.name} {cell.metadata.nbgrader['grade_id']}"
        assert cell_kind != "other", f"{where}: nbgrader metadata that is neither answer, check nor written answer"
        assert "solution" not in cell.metadata.get("tags", []), f"{where}: the old 'solution' tag"
        if cell_kind == "answer":
            assert cell.cell_type == "code", f"{where}: answer cells are code cells"
            assert cell.source.count(BEGIN) == cell.source.count(END) > 0, f"{where}: {BEGIN} ... {END}"
            assert solution_lines(cell), f"{where}: an empty solution"
            assert cell.metadata.get("jupyter", {}).get("source_hidden"), f"{where}: collapse the solution"
        elif cell_kind == "check":
            assert cell.cell_type == "code" and cell.metadata.nbgrader.get("locked"), f"{where}: a locked code cell"
            assert cell.metadata.nbgrader.get("points", 0) > 0, f"{where}: a check gives points"
            assert "assert" in cell.source, f"{where}: a check asserts"
        else:
            assert cell.cell_type == "markdown", f"{where}: written answers are markdown cells"
            assert cell.metadata.nbgrader.get("points", 0) > 0, f"{where}: a written answer gives points"
    # Each check follows the answer it checks; the first nbgrader cell is an answer.
    assert kinds[0] == "answer", f"{path.name}: the first exercise cell must be an answer cell"


# -------------------------------------------------------------------------------------- the released copies
def test_committed_released_copies_are_current(course):
    found = release.problems(ROOT / "notebooks", course)
    assert not found, "released notebooks are stale; run python scripts/release_notebooks.py:\n" + "\n".join(found)


@pytest.mark.parametrize("path", SOLVED, ids=lambda path: path.stem[:2])
def test_released_copy_has_stubs_and_no_solution_text(path, course):
    released = nbformat.reads(course.released[path.name], as_version=4)
    text = "\n".join(cell.source for cell in released.cells)
    assert BEGIN not in text and END not in text
    released_lines = {line.strip() for line in text.splitlines()}
    solved = nbformat.read(path, as_version=4)
    # A solution line may also be a lesson line (plt.show()); only a line the lesson does not have is a leak.
    lesson = {line for cell in solved.cells for line in split_lines(cell)[1]}
    for cell in release.nbgrader_cells(solved):
        for line in solution_lines(cell):
            if line not in lesson and not line.startswith("#"):
                assert line not in released_lines, f"{path.name} {cell.metadata.nbgrader['grade_id']}: {line!r}"
    answers = {cell.id: cell for cell in released.cells if kind(cell) in ("answer", "written")}
    for cell in answers.values():
        stub = "raise NotImplementedError()" if cell.cell_type == "code" else "YOUR ANSWER HERE"
        assert stub in cell.source and not cell.metadata.get("jupyter", {}).get("source_hidden"), cell.id
    assert all(not cell.get("outputs") for cell in released.cells), f"{path.name}: outputs left in"
    assert "widgets" not in released.metadata


# ------------------------------------------------------------------------------------------ autograding
@pytest.mark.parametrize("path", SOLVED, ids=lambda path: path.stem[:2])
def test_released_copy_scores_zero_and_runs_top_to_bottom(path, course, notebook_run):
    graded = course.autograde(course.released[path.name], path.stem, "released")
    points = sum(cell.metadata.nbgrader["points"] for cell in release.nbgrader_cells(graded.notebook)
                 if cell.metadata.nbgrader.get("grade"))
    assert sum(grade.max_score for grade in graded.grades) == points > 0
    assert [grade for grade in graded.grades if grade.auto_score != 0] == [], f"{path.name}: points for a stub"
    for number, cell in enumerate(graded.notebook.cells):
        if cell.cell_type != "code":
            continue
        where = f"{path.name} cell {number} ({kind(cell)})"
        assert cell.execution_count is not None, f"{where}: never ran; the notebook stopped before it"
        errors = [output for output in cell.outputs if output.output_type == "error"]
        if kind(cell) == "answer":
            assert [e.ename for e in errors] in ([], ["NotImplementedError"]), f"{where}: {errors}"
        elif kind(cell) == "check":
            assert errors and errors[0].ename in CLEAN_FAILURES, f"{where}: should fail cleanly on the stubs: {errors}"
        else:
            assert not errors, f"{where}: a lesson cell fails in the released copy: {errors}"


# ------------------------------------------------- the grading itself, on a notebook small enough to run fast
def _toy_notebook(answer: str) -> str:
    """A solved notebook with one exercise: an answer cell, a 2-point check, and a written answer."""
    meta = {"schema_version": 3, "task": False, "locked": False}
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                 "language": "python"}})
    notebook.cells = [
        nbformat.v4.new_code_cell("numbers = [3, 1, 2]"),
        nbformat.v4.new_code_cell(
            f"{BEGIN}\nlargest = {answer}\n{END}",
            metadata={"nbgrader": {**meta, "grade_id": "ex1-answer", "solution": True, "grade": False}}),
        nbformat.v4.new_code_cell(
            "assert largest == 3",
            metadata={"nbgrader": {**meta, "grade_id": "ex1-check", "solution": False, "grade": True,
                                   "locked": True, "points": 2}}),
        nbformat.v4.new_markdown_cell(
            "Because max looks at every number.",
            metadata={"nbgrader": {**meta, "grade_id": "ex1-why", "solution": True, "grade": True, "points": 1}}),
        nbformat.v4.new_code_cell("print('the end')"),
    ]
    for number, cell in enumerate(notebook.cells):
        cell.id = f"cell-{number}"
    return release.render(notebook)


def test_autograde_gives_full_marks_partial_marks_and_zero(tmp_path):
    (tmp_path / "toy").mkdir()
    solved = tmp_path / "toy" / "99_toy.ipynb"
    solved.write_text(_toy_notebook("max(numbers)"))
    course = release.Course(tmp_path / "course")
    stub = course.release([solved])["99_toy.ipynb"]
    assert "max(numbers)" not in stub and "raise NotImplementedError()" in stub

    right = course.autograde(solved.read_text(), "99_toy", "right")
    assert (right.auto_score, right.auto_max_score) == (2, 2)
    assert [grade.grade_id for grade in right.grades if grade.manual and grade.auto_score is None] == ["ex1-why"]
    wrong = course.autograde(_toy_notebook("min(numbers)"), "99_toy", "wrong")
    assert wrong.auto_score == 0 and wrong.auto_max_score == 2
    blank = course.autograde(stub, "99_toy", "blank")
    assert [grade.auto_score for grade in blank.grades] == [0, 0]
    assert blank.notebook.cells[-1].outputs[0].text == "the end\n"  # the stub did not stop the notebook

    # Without execution nbgrader grades the outputs it is given: an error output in the check loses its points.
    ran = nbformat.reads(_toy_notebook("max(numbers)"), as_version=4)
    assert course.autograde(release.render(ran), "99_toy", "unrun", execute=False).auto_score == 2
    ran.cells[2].outputs = [nbformat.v4.new_output("error", ename="AssertionError", evalue="", traceback=[])]
    assert course.autograde(release.render(ran), "99_toy", "failed", execute=False).auto_score == 0


def test_check_finds_missing_stale_and_orphaned_copies(tmp_path):
    (tmp_path / "01_toy.ipynb").write_text(_toy_notebook("max(numbers)"))
    (tmp_path / "notes.ipynb").write_text(_toy_notebook("max(numbers)"))  # not NN_*: not released
    assert release.problems(tmp_path) == [f"{tmp_path / 'student' / '01_toy.ipynb'}: missing"]
    assert release.main(["--check", "--notebooks", str(tmp_path)]) == 1
    assert release.main(["--notebooks", str(tmp_path)]) == 0
    assert release.problems(tmp_path) == []
    assert sorted(p.name for p in (tmp_path / "student").iterdir()) == ["01_toy.ipynb"]
    first = (tmp_path / "student" / "01_toy.ipynb").read_text()
    assert release.main(["--notebooks", str(tmp_path)]) == 0
    assert (tmp_path / "student" / "01_toy.ipynb").read_text() == first, "releasing twice gives the same file"

    changed = nbformat.reads(_toy_notebook("max(numbers)"), as_version=4)
    changed.cells[0].source = "numbers = [3, 1, 2, 0]"  # outside the solution: the copy changes too
    (tmp_path / "01_toy.ipynb").write_text(release.render(changed))
    (tmp_path / "student" / "09_gone.ipynb").write_text("{}")
    assert release.problems(tmp_path) == [
        f"{tmp_path / 'student' / '01_toy.ipynb'}: out of date",
        f"{tmp_path / 'student' / '09_gone.ipynb'}: no solved notebook 09_gone.ipynb in {tmp_path}",
    ]
    release.write_copies(tmp_path)
    assert release.problems(tmp_path) == []
    written = nbformat.read(tmp_path / "student" / "01_toy.ipynb", as_version=4).cells
    assert written[0].source == "numbers = [3, 1, 2, 0]" and written[1].source.endswith("NotImplementedError()")


def test_course_option_leaves_a_course_to_autograde_in(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "01_toy.ipynb").write_text(_toy_notebook("max(numbers)"))
    course = tmp_path / "course"
    assert release.main(["--notebooks", str(tmp_path / "notebooks"), "--course", str(course)]) == 0
    assert (course / "release" / "01_toy" / "01_toy.ipynb").is_file() and (course / "gradebook.db").is_file()
    assert re.search(r"course_id = 'cbr-lite'", (course / "nbgrader_config.py").read_text())
    assert release.main(["--notebooks", str(tmp_path / "notebooks"), "--course", str(course)]) == 2  # not empty
