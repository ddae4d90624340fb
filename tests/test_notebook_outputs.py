"""What the committed notebooks print must be the same on every CPU: nbval compares it on the learner's machine.

A difference between two float computations ("4.8e-07") or a float printed to many digits depends on the
CPU's vector width, the thread count and the library's round-off; a notebook prints a rounded claim instead
("largest difference below 1e-5") or asserts it. Cells whose output is legitimately machine-dependent
(timings) start with ``# NBVAL_IGNORE_OUTPUT`` and are not compared, so they are not checked here either.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# "3.0e-07", "-1.25E+03": a measured float in scientific notation (a claimed bound is written "1e-5");
# "0.1234567": six or more decimals, round-off territory for float32.
CPU_DEPENDENT_NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d+[eE][-+]?\d+\b|(?<![\w.])-?\d+\.\d{6,}\b")


def printed_numbers(cell: dict) -> list[str]:
    """The CPU-dependent-looking numbers in a code cell's text outputs (stream and text/plain results)."""
    found = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            text = "".join(output.get("text", ""))
        else:
            text = "".join(output.get("data", {}).get("text/plain", ""))
        found.extend(match.group(0) for match in CPU_DEPENDENT_NUMBER.finditer(text))
    return found


def test_the_pattern_catches_round_off_and_spares_claims():
    cell = {"outputs": [{"output_type": "stream", "text": ["difference 4.8e-07, below 1e-5; 0.30000000000000004\n"]},
                        {"output_type": "execute_result", "data": {"text/plain": ["accuracy 0.917, 1e-6"]}}]}
    assert printed_numbers(cell) == ["4.8e-07", "0.30000000000000004"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_no_cell_prints_a_cpu_dependent_number(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    offending = {
        index: numbers for index, cell in enumerate(cells)
        if cell["cell_type"] == "code" and not "".join(cell["source"]).startswith("# NBVAL_IGNORE_OUTPUT")
        and (numbers := printed_numbers(cell))
    }
    assert not offending, (f"{path.name} prints numbers that differ between CPUs (cell index: numbers): "
                           f"{offending}; print a rounded claim or assert instead")
