"""Student copies of the notebooks: solutions stripped, outputs cleared, and kept current."""

import copy
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("make_student_notebooks", ROOT / "scripts" / "make_student_notebooks.py")
make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make)


def code_cell(source, tags=(), outputs=None):
    metadata = {"tags": list(tags), "execution": {"iopub.status.busy": "2026-01-01T00:00:00Z"}}
    if "solution" in tags:
        metadata["jupyter"] = {"source_hidden": True}
    return {"cell_type": "code", "source": source, "metadata": metadata, "id": source[:8].strip() or "x",
            "outputs": outputs if outputs is not None else
            [{"output_type": "stream", "name": "stdout", "text": ["42\n"]}], "execution_count": 7}


def solved_notebook():
    return {
        "cells": [
            {"cell_type": "markdown", "source": "# Title\n**Exercise 1**", "metadata": {}, "id": "m1"},
            code_cell("import numpy as np"),
            code_cell("answer = np.sum([1, 2])\nprint(answer)", tags=["solution"]),
            code_cell("assert True", tags=["other"]),
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


def test_solutions_are_replaced_and_outputs_cleared():
    solved = solved_notebook()
    original = copy.deepcopy(solved)
    student = make.student_copy(solved)
    assert solved == original, "the solved notebook must not be modified"
    markdown, plain, solution, other = student["cells"]
    assert markdown == original["cells"][0]
    assert solution["source"] == "# Your solution here"
    assert solution["metadata"] == {"tags": ["solution"]}  # unhidden, run timings gone
    assert plain["source"] == "import numpy as np" and other["source"] == "assert True"
    for cell in (plain, solution, other):
        assert cell["outputs"] == [] and cell["execution_count"] is None
        assert "execution" not in cell["metadata"]
    assert student["metadata"] == original["metadata"]


def test_check_finds_missing_stale_and_orphaned_copies(tmp_path):
    (tmp_path / "01_first.ipynb").write_text(json.dumps(solved_notebook()))
    (tmp_path / "notes.ipynb").write_text(json.dumps(solved_notebook()))  # not NN_*: no student copy
    assert make.problems(tmp_path) == [f"{tmp_path / 'student' / '01_first.ipynb'}: missing"]
    assert make.main(["--check", "--notebooks", str(tmp_path)]) == 1
    assert make.main(["--notebooks", str(tmp_path)]) == 0
    assert make.problems(tmp_path) == []
    assert sorted(p.name for p in (tmp_path / "student").iterdir()) == ["01_first.ipynb"]

    changed = solved_notebook()
    changed["cells"][1]["source"] = "import numpy"
    (tmp_path / "01_first.ipynb").write_text(json.dumps(changed))
    (tmp_path / "student" / "09_gone.ipynb").write_text("{}")
    assert make.problems(tmp_path) == [
        f"{tmp_path / 'student' / '01_first.ipynb'}: out of date",
        f"{tmp_path / 'student' / '09_gone.ipynb'}: no solved notebook 09_gone.ipynb in {tmp_path}",
    ]
    make.write_copies(tmp_path)
    assert make.problems(tmp_path) == []
    written = json.loads((tmp_path / "student" / "01_first.ipynb").read_text())
    assert written["cells"][1]["source"] == "import numpy"


def test_every_notebook_has_every_exercise_solved_in_a_hidden_tagged_cell():
    for path in make.source_notebooks(ROOT / "notebooks"):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        solutions = [cell for cell in cells if "solution" in cell.get("metadata", {}).get("tags", [])]
        assert solutions, f"{path.name}: no cell tagged 'solution'"
        for cell in solutions:
            assert cell["cell_type"] == "code", f"{path.name}: a 'solution' cell must be a code cell"
            assert cell["metadata"].get("jupyter", {}).get("source_hidden"), f"{path.name}: solution not hidden"


def test_committed_student_copies_are_current():
    found = make.problems(ROOT / "notebooks")
    assert not found, "student notebooks are stale; run python scripts/make_student_notebooks.py:\n" + "\n".join(found)
