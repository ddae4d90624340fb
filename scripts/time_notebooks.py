"""Time every notebook the way README.md's "seconds" column measures it, against the 90-second budget.

Each solved notebook ``notebooks/NN_*.ipynb`` is executed once with ``jupyter nbconvert --execute`` into a
temporary folder (the committed notebook is not touched), kernel and TensorFlow start-up included, one after
another so they do not share the cores. The script prints one line per notebook and the machine's load
average, and exits 1 when a notebook fails or takes longer than the budget. It is a benchmark, not a test:
the figures depend on the machine and on what else runs on it, so run it on a quiet machine.

    python scripts/time_notebooks.py                  # all notebooks
    python scripts/time_notebooks.py 05 12            # the notebooks whose names start with these numbers
    python scripts/time_notebooks.py --budget 120     # another budget, in seconds
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
#: What every notebook must stay within on a 2-core laptop-class machine (the project's promise).
BUDGET_S = 90.0


def execute_seconds(notebook: Path, folder: Path) -> tuple[float, str]:
    """Execute ``notebook`` into ``folder`` with nbconvert; return (wall seconds, error text or "")."""
    command = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
               "--ExecutePreprocessor.timeout=600", "--ExecutePreprocessor.store_widget_state=False",
               "--output-dir", str(folder), str(notebook)]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, cwd=NOTEBOOKS)
    seconds = time.perf_counter() - started
    error = "" if finished.returncode == 0 else (finished.stderr.strip().splitlines() or ["failed"])[-1]
    return seconds, error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("numbers", nargs="*", help="notebook numbers to time (default: all)")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help=f"seconds allowed (default {BUDGET_S:.0f})")
    args = parser.parse_args(argv)
    notebooks = sorted(path for path in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")
                       if not args.numbers or path.name[:2] in args.numbers)
    if not notebooks:
        parser.error(f"no notebook numbered {' '.join(args.numbers)} in {NOTEBOOKS}")
    print(f"{os.cpu_count()} cores, load average at the start {os.getloadavg()[0]:.1f}", flush=True)
    over = []
    with tempfile.TemporaryDirectory() as folder:
        for notebook in notebooks:
            seconds, error = execute_seconds(notebook, Path(folder))
            verdict = f"FAILED: {error}" if error else ("within" if seconds <= args.budget else "OVER")
            print(f"{notebook.name:55s} {seconds:6.0f} s  {verdict}", flush=True)
            if error or seconds > args.budget:
                over.append(notebook.name)
    print(f"load average at the end {os.getloadavg()[0]:.1f}; "
          + (f"{len(over)} over the {args.budget:.0f} s budget or failed: {', '.join(over)}" if over
             else f"all {len(notebooks)} within {args.budget:.0f} s"))
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
