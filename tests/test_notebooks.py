"""The notebooks run top to bottom (their code cells are executed in order; they assert their own claims)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_notebooks_exist():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, capsys):
    cells = json.loads(path.read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    assert code
    namespace: dict = {}
    for source in code:
        exec(compile(source, f"{path.name}", "exec"), namespace)
    assert capsys.readouterr().out, "the notebook prints its results"
