"""notebooks/autoscaling.ipynb runs top to bottom on a synthetic experiment directory (no
cluster: the notebook only reads parquet files and draws with recsys.experiments.report)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.experiments.synthetic import write_synthetic_experiment

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "autoscaling.ipynb"


@pytest.mark.slow
def test_notebook_runs_on_a_synthetic_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    directory = write_synthetic_experiment(tmp_path / "synthetic-step")
    monkeypatch.setenv("RECSYS_EXPERIMENT_DIR", str(directory))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert "RECSYS_EXPERIMENT_DIR" in nb.cells[1].source  # the path lives in the first code cell
    client = nbclient.NotebookClient(
        nb,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # latency, scaling, load
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "synthetic-step: policy reactive" in text
