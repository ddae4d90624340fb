"""What every committed notebook's metadata must say for JupyterLab to open it cleanly."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("**/*.ipynb"))


def metadata(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))["metadata"]


def test_there_are_notebooks():
    assert len([path for path in NOTEBOOKS if path.parent.name == "notebooks"]) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.relative_to(ROOT / "notebooks").as_posix())
def test_the_notebook_names_the_kernel_run_sh_registers(path):
    # JupyterLab rewrites a notebook's kernelspec to the kernel's own on opening, marking it modified.
    registered = re.search(r'ipykernel install --sys-prefix --name (\S+) --display-name "([^"]+)"',
                           (ROOT / "run.sh").read_text()).groups()
    kernelspec = metadata(path)["kernelspec"]
    assert (kernelspec["name"], kernelspec["display_name"]) == registered


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.relative_to(ROOT / "notebooks").as_posix())
def test_the_notebook_holds_no_saved_widget_state(path):
    # JupyterLab 4 cannot draw saved widget state (it logs "widget model not found" on opening), and the
    # state would hold the bytes of every image uploaded in code. Re-execute with
    # --ExecutePreprocessor.store_widget_state=False (CONTRIBUTING.md).
    assert "widgets" not in metadata(path)
