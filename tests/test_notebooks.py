"""The example notebooks run top to bottom (nbclient, a real kernel), so they cannot rot."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_digits_asha_notebook_runs_and_shows_results(tmp_path: Path) -> None:
    notebook = nbformat.read(EXAMPLES / "digits_asha.ipynb", as_version=4)
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = [
        o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
    ]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "best: {" in text and "merge rate" in text
    tables = [o for o in outputs if "text/html" in o.get("data", {})]
    assert tables and "val_acc" in tables[0]["data"]["text/html"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1
    assert (tmp_path / "hippo-runs" / "digits-asha" / "plan").is_dir()
