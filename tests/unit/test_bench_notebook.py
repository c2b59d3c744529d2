"""notebooks/bench.ipynb runs top to bottom on synthetic benchmark outputs (no servers: the
notebook only reads the files scripts/bench.py writes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.bench.synthetic import write_synthetic_outputs

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "bench.ipynb"


@pytest.mark.slow
def test_bench_notebook_runs_on_synthetic_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    directory = write_synthetic_outputs(tmp_path / "bench")
    monkeypatch.setenv("RECSYS_BENCH_DIR", str(directory))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert "RECSYS_BENCH_DIR" in nb.cells[1].source
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
    assert len(images) == 2  # latency vs rate, Serve components by rate
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "6 systems" in text
