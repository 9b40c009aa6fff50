"""The seed tutorial as a notebook (python/examples/seed-tutorial.ipynb), executed in a real
Jupyter kernel by nbclient against the shared local cluster, ``%px`` included."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

import bramble as ipp

NOTEBOOK = Path(__file__).parents[1] / "examples" / "seed-tutorial.ipynb"


def text(cell: dict) -> str:
    """Everything a cell printed or displayed, as text."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data"):
            parts.append(out["data"].get("text/plain", "") + "\n")
    return "".join(parts)


def test_the_seed_tutorial_runs_in_jupyter(cluster: ipp.Cluster, tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = dict(os.environ, BRAMBLE_HOME=str(Path(cluster.home)))
    env.pop("BRAMBLE_BUNDLE", None)
    client = NotebookClient(nb, kernel_name="python3", timeout=120, resources={})
    client.execute(env=env)  # a failing cell raises CellExecutionError
    nbformat.write(nb, tmp_path / "seed-tutorial.executed.ipynb")
    code = [c for c in nb.cells if c.cell_type == "code"]
    outputs = {c.source.splitlines()[-1]: text(c) for c in code}
    assert outputs["c.ids"] == "[0, 1, 2, 3]\n"
    hello = outputs['c[:].apply_sync(lambda : "Hello World")']
    assert hello == "['Hello World', 'Hello World', 'Hello World', 'Hello World']\n"
    assert outputs["%px y = [i**10 for i in x]"] == ""
    assert outputs["print(y)"].startswith("<AsyncMapResult(gather): ")
    # IPython pretty-prints a long list over several lines: compare the value.
    assert ast.literal_eval(outputs["y.get()[:10]"]) == [i**10 for i in range(10)]
    printed = outputs["    print(i)"].splitlines()
    assert printed == [str((i, i**10)) for i in range(64)]
    px = outputs["6 * 7"]
    assert "[stdout:0] hello from engine True" in px and "[stdout:1] hello from engine True" in px
    assert "Out[0:" in px and "]: 42" in px and "Out[1:" in px
    assert "[stdout:1] hello from engine True" in outputs["%pxresult"]
