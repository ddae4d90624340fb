"""The package's import policy: ``import cbr_lite`` is light (names are imported on first use), the modules
import each other one way (no cycles, nothing imported from ``cbr_lite/__init__``), and CONTRIBUTING.md's
module map lists every module."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cbr_lite"
MODULES = sorted(path.stem for path in PACKAGE.glob("*.py"))
HEAVY = ("tensorflow", "keras", "matplotlib", "ai_edge_litert")


def test_the_package_and_the_command_line_parser_import_nothing_heavy(run_python):
    result = run_python(f"""
        import sys
        import cbr_lite
        from cbr_lite import cli
        cli.make_parser()
        cbr_lite.__version__, cbr_lite.CbrError
        print(sorted(name for name in {HEAVY!r} if name in sys.modules))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_public_name_resolves_from_its_module():
    import cbr_lite

    for name in cbr_lite.__all__:
        value = getattr(cbr_lite, name)
        assert getattr(value, "__module__", None) in (None, f"cbr_lite.{cbr_lite._HOME[name]}") or name.isupper(), name
    assert set(cbr_lite.__all__) <= set(dir(cbr_lite))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cbr_lite.nope  # noqa: B018


def _imports(module: str) -> set:
    """The cbr_lite modules ``module`` imports, at the top or inside functions (both are arrows)."""
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("cbr_lite")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cbr_lite"):
            if node.module == "cbr_lite":  # `from cbr_lite import x`: a submodule, or a name from __init__
                found |= {f"cbr_lite.{alias.name}" if alias.name in MODULES else "cbr_lite.__init__"
                          for alias in node.names}
            else:
                found.add(node.module)
    return {name.split(".", 1)[1] if "." in name else "__init__" for name in found} - {module}


def test_no_module_imports_from_the_package_init():
    """``__init__`` re-exports names lazily; a module that imported from it would be an arrow back up."""
    offenders = [module for module in MODULES if module != "__init__" and "__init__" in _imports(module)]
    assert offenders == []


def test_the_import_graph_has_no_cycle():
    graph = {module: _imports(module) for module in MODULES}
    cycles = []

    def visit(module, path):
        for target in sorted(graph.get(module, ())):
            if target in path:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            else:
                visit(target, path + [target])

    for module in MODULES:
        visit(module, [module])
    assert cycles == []


def test_contributing_lists_every_module_and_only_modules_that_exist():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    listed = set(re.findall(r"^\| `cbr_lite/(\w+)\.py` \|", text, flags=re.MULTILINE))
    assert listed == set(MODULES)
    # It must not send readers to files the repository does not have.
    for linked in re.findall(r"[\w/.-]+\.md\b", text):
        assert (ROOT / linked).exists(), linked
