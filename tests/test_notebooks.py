"""Every notebook runs top to bottom in a real Jupyter kernel (nbclient + ipykernel) of this interpreter.

The notebooks assert their own claims in their last cells, so an executed notebook is a passed test. The kernel
is started from a kernel spec written for this test that names ``sys.executable``, so the kernel is this venv's
ipykernel whatever other ``python3`` kernels the machine has registered.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import AsyncKernelManager  # noqa: E402

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
KERNEL = "lightning-kd-test"
TIMEOUT_S = 600  # per cell; the notebooks take about a minute each on a free CPU


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory) -> KernelSpecManager:
    """A kernel spec running ``python -m ipykernel_launcher`` with this very interpreter."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL
    spec.mkdir()
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "lightning-kd tests",
                "language": "python",
            }
        )
    )
    return KernelSpecManager(kernel_dirs=[str(root)])


def test_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} >= {
        "logit_standardization_toy_case.ipynb",
        "quickstart.ipynb",
        "inspecting_logits.ipynb",
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_stripped_and_defines_no_library_code(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"{path.name}: outputs must be stripped before committing"
        assert cell.execution_count is None, f"{path.name}: execution counts must be stripped"
        # helpers belong in the package (lightning_kd.apps.analysis, ...), not in a notebook
        defined = [n.name for n in ast.walk(ast.parse(cell.source)) if isinstance(n, ast.FunctionDef | ast.ClassDef)]
        assert not defined, f"{path.name} defines {defined}: move them into lightning_kd"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_in_a_jupyter_kernel(path, kernel_specs, tmp_path, monkeypatch):
    # tiny networks: one thread is as fast, and the test suite shares the CPU with other tests
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(path, as_version=4)
    # one extra cell tells which interpreter the kernel runs
    notebook.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
    kernel = AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=kernel_specs)
    # the kernel's working directory is tmp_path: whatever a notebook writes stays out of the repository
    client = nbclient.NotebookClient(
        notebook, km=kernel, timeout=TIMEOUT_S, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if a cell fails
    assert notebook.cells[-1].outputs[0]["text"].strip() == sys.executable
    texts = [o.get("text", "") for c in notebook.cells[:-1] if c.cell_type == "code" for o in c.outputs]
    assert "".join(texts).strip(), f"{path.name} printed nothing"
