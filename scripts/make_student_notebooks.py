"""Write the student copies of the notebooks: solutions stripped, outputs cleared.

The solved notebooks ``notebooks/NN_*.ipynb`` are the source (as in Neuromatch and fastbook). Each code
cell tagged ``solution`` has its code replaced by ``# Your solution here``; every output and execution
count is cleared. The copies go to ``notebooks/student/`` under the same names.

    python scripts/make_student_notebooks.py           # (re)write the copies
    python scripts/make_student_notebooks.py --check   # exit 1 if a copy is missing, stale or orphaned

``tests/test_student_notebooks.py`` runs the check, so CI fails when a notebook changed and its student
copy was not regenerated.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOLUTION_TAG = "solution"
PLACEHOLDER = "# Your solution here"
# Per-cell metadata that records one particular run (nbclient's timings) or hides the cell.
_RUN_METADATA = ("execution", "collapsed", "scrolled")


def source_notebooks(notebooks_dir: Path) -> list[Path]:
    """The solved notebooks, ``NN_*.ipynb``, sorted."""
    return sorted(path for path in Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb") if path.is_file())


def student_copy(notebook: dict) -> dict:
    """The student version of a notebook (a parsed ``.ipynb`` dict); the input is not modified.

    >>> cell = {"cell_type": "code", "source": "x = 1", "metadata": {"tags": ["solution"]},
    ...         "outputs": [{"output_type": "stream", "name": "stdout", "text": "1"}], "execution_count": 3}
    >>> student_copy({"cells": [cell], "metadata": {}})["cells"][0]["source"]
    '# Your solution here'
    """
    notebook = copy.deepcopy(notebook)
    # Saved widget state belongs to one run (random model ids) and to outputs the copy does not have.
    notebook.get("metadata", {}).pop("widgets", None)
    for cell in notebook.get("cells", []):
        metadata = cell.setdefault("metadata", {})
        for key in _RUN_METADATA:
            metadata.pop(key, None)
        if cell.get("cell_type") != "code":
            continue
        cell["outputs"] = []
        cell["execution_count"] = None
        if SOLUTION_TAG in metadata.get("tags", []):
            cell["source"] = PLACEHOLDER
            # The solution cells are hidden in the solved notebook; the student must see the empty cell.
            jupyter = metadata.get("jupyter", {})
            jupyter.pop("source_hidden", None)
            if not jupyter:
                metadata.pop("jupyter", None)
    return notebook


def render(notebook: dict) -> str:
    """Serialise a notebook the way Jupyter does (1-space indent, sorted keys, trailing newline)."""
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def expected_copies(notebooks_dir: Path) -> dict[Path, str]:
    """Student copy path -> the text it should have, for every solved notebook."""
    student_dir = Path(notebooks_dir) / "student"
    return {
        student_dir / path.name: render(student_copy(json.loads(path.read_text(encoding="utf-8"))))
        for path in source_notebooks(notebooks_dir)
    }


def problems(notebooks_dir: Path) -> list[str]:
    """Every student copy that is missing, out of date, or has no solved notebook any more."""
    expected = expected_copies(notebooks_dir)
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


def write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, renamed into place."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_copies(notebooks_dir: Path) -> list[Path]:
    """(Re)write every student copy whose text changed and delete orphaned ones; returns the paths touched."""
    student_dir = Path(notebooks_dir) / "student"
    student_dir.mkdir(exist_ok=True)
    expected = expected_copies(notebooks_dir)
    touched = []
    for path, text in expected.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            write_atomically(path, text)
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
    args = parser.parse_args(argv)
    if not args.notebooks.is_dir():
        print(f"make_student_notebooks: {args.notebooks}: no such folder", file=sys.stderr)
        return 2
    if args.check:
        found = problems(args.notebooks)
        for line in found:
            print(line, file=sys.stderr)
        if found:
            print("run: python scripts/make_student_notebooks.py", file=sys.stderr)
        return 1 if found else 0
    for path in write_copies(args.notebooks):
        print(f"{'wrote' if path.exists() else 'removed'} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
