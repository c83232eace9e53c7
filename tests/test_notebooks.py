"""The notebooks run in the test suite, so they never rot."""

import nbclient
import nbformat

from selfsup.export import export
from tests.helpers import REPO


def test_load_pretrained_encoder_notebook(tiny_runs, tmp_path, monkeypatch):
    out = export(tiny_runs["simclr"]["run_dir"] / "checkpoints" / "last.ckpt", tmp_path / "export")
    monkeypatch.setenv("SELFSUP_EXPORT_DIR", str(out))
    notebook = nbformat.read(REPO / "notebooks" / "load_pretrained_encoder.ipynb", as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "kNN top-1 on 360 held-out digits" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the PCA plot
    assert not any(o.output_type == "error" for o in outputs)
