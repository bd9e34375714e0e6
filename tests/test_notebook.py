"""The notebook runs top to bottom (on a small world built by the real stages)."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from core.settings import ROOT

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


@pytest.mark.parametrize(
    ("notebook", "small_env"),
    [("game_ltv", "GAME_LTV_NOTEBOOK_SMALL"), ("payment_option", "PAYMENT_OPTION_NOTEBOOK_SMALL")],
)
def test_notebook_executes(monkeypatch, notebook, small_env):
    monkeypatch.setenv(small_env, "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for var in ("REDIS_URL", "DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    nb = nbformat.read(ROOT / "notebooks" / f"{notebook}.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum(1 for o in outputs if "image/png" in o.get("data", {})) >= 4
