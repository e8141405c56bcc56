"""The package layout: library core apart from the applications, old import paths kept, no outside references."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lightning_kd
from lightning_kd._moved import MOVED

PACKAGE = Path(lightning_kd.__file__).parent
REPO = PACKAGE.parent
# the entry points, which start the applications; everything else outside apps/ is the library core
ENTRY_POINTS = {"cli.py", "__main__.py", "_moved.py"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_core_never_imports_the_applications():
    core = [p for p in PACKAGE.rglob("*.py") if "apps" not in p.relative_to(PACKAGE).parts]
    offenders = {
        p.relative_to(PACKAGE).as_posix(): sorted(n for n in _imports(p) if n.startswith("lightning_kd.apps"))
        for p in core
        if p.name not in ENTRY_POINTS or p.parent != PACKAGE
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_package_root_holds_the_core_and_the_entry_points_only():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    moved = {name.rpartition(".")[2] + ".py" for name in MOVED}
    assert not set(root) & moved
    assert not (PACKAGE / "tools").exists()  # tools/ means the repository's developer scripts only


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_import_path_is_the_same_module(old):
    module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])
    assert module.__spec__.name == MOVED[old]  # the alias does not rename the module


def test_old_paths_of_classes_and_functions_resolve_to_the_same_objects():
    from lightning_kd.apps.summarize import main as summarize_main
    from lightning_kd.callbacks import EpochLine

    assert importlib.import_module("lightning_kd.demo").EpochLine is EpochLine  # configs of before the move
    assert importlib.import_module("lightning_kd.tools.summarize").main is summarize_main
    from lightning_kd.tools import paper_results

    assert paper_results is importlib.import_module("lightning_kd.apps.paper_results")


def test_python_dash_m_on_an_old_path_runs_the_moved_module():
    result = subprocess.run(
        [sys.executable, "-m", "lightning_kd.sweep", "--help"], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert "--temperatures" in result.stdout or "usage" in result.stdout.lower()


def test_no_reference_outside_the_repository_in_code_configs_and_tests():
    pattern = re.compile(r"method\.md|shared/reference/method|\b[Ii]ssue \d+\b")
    roots = [PACKAGE, REPO / "tools", REPO / "configs", REPO / "tests", REPO / "benchmarks"]
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.suffix in {".py", ".yaml", ".sh", ".md"} and path.name != Path(__file__).name:
                for number, line in enumerate(path.read_text().splitlines(), 1):
                    if pattern.search(line):
                        found.append(f"{path.relative_to(REPO)}:{number}")
    assert found == []


def test_the_sources_cited_as_sections_exist():
    sections = set(re.findall(r"^#+ (§[\d.]+)", (REPO / "docs" / "sources.md").read_text(), flags=re.M))
    sections |= set(re.findall(r"\*\*(§[\d.]+)", (REPO / "docs" / "sources.md").read_text()))
    cited: set[str] = set()
    for root in (PACKAGE, REPO / "tools", REPO / "configs", REPO / "tests"):
        for path in root.rglob("*"):
            if path.suffix in {".py", ".yaml"}:
                for match in re.finditer(r"docs/sources\.md((?:[ ,]+(?:and )?§[\d.]+(?:-[\d.]+)?)+)", path.read_text()):
                    cited.update(re.findall(r"§(\d+(?:\.\d+)?)", match.group(1)))
    missing = sorted(c for c in cited if f"§{c}" not in sections and f"§{c.split('.')[0]}" not in sections)
    assert cited
    assert missing == []
