"""The customer_risk stages as DVC runs them: entry points, params.yaml sections, dvc.yaml wiring."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from core.settings import ROOT
from domain.customer_risk import schema as S

pytestmark = pytest.mark.slow

STAGES = ("customer_risk_generate", "customer_risk_ingest")


def test_dvc_stages_declare_their_code_params_and_outputs():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["customer_risk"]
    gen, ing = (stages[s] for s in STAGES)
    assert "synthetic.customer_risk" in gen["cmd"] and "pipelines.customer_risk.ingest" in ing["cmd"]
    for stage in (gen, ing):
        for dep in stage["deps"]:
            if not dep.startswith("${"):
                assert (ROOT / dep).exists(), dep
    assert gen["params"] == ["customer_risk.generate"] and ing["params"] == ["customer_risk.ingest"]
    assert gen["outs"] == [params["ingest"]["raw_dir"]], "ingest reads what generate writes"
    assert "${customer_risk.ingest.raw_dir}" in ing["deps"]
    assert ing["metrics"] == [{"metrics/customer_risk_ingest.json": {"cache": False}}]


def test_train_stage_trains_with_the_stored_tuned_values_and_never_searches():
    """The search is `--tune` only (make tune-customer-risk); the stage's params cover the stored values,
    so a new search result retrains the model, and the report follows (its tuning section)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    train, report = stages["customer_risk_train"], stages["customer_risk_report"]
    assert "pipelines.customer_risk.train" in train["cmd"] and "--tune" not in train["cmd"]
    assert "customer_risk.train" in train["params"] and "customer_risk.train" in report["params"]
    assert not any("--tune" in str(s.get("cmd", "")) for s in stages.values())


def test_generate_then_ingest_from_the_command_line(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["customer_risk"]["generate"].update(
        n_labeled=800, n_unlabeled=300, chunk_size=500, calibration_customers=800
    )
    raw["customer_risk"]["ingest"]["raw_dir"] = str(tmp_path / "raw")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", *args, "--params", str(params)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return done.stderr

    log = run("synthetic.customer_risk", "--out", str(tmp_path / "raw"))
    assert "oracle_roc_auc" in log and "prevalence_labeled" in log
    run(
        "pipelines.customer_risk.ingest",
        "--clean",
        str(tmp_path / "clean"),
        "--quarantine",
        str(tmp_path / "quarantine"),
        "--metrics",
        str(tmp_path / "metrics.json"),
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["extracted_at"] == "2026-09-03T00:00:00Z"
    assert metrics["clean"]["labeled_customers"] > 780 and metrics["clean"]["unlabeled_customers"] > 290
    for cohort in S.COHORTS:
        for f in (S.CUSTOMERS, S.TRANSACTIONS):
            rep = metrics[f"{cohort}_{f}"]
            assert rep["rows_in"] == rep["rows_ok"] + rep["quarantined"]
            assert (tmp_path / "quarantine" / f"{cohort}_{f}.csv").exists()
    tx = pd.read_parquet(tmp_path / "clean" / S.CLEAN_TRANSACTIONS)
    assert len(tx) == metrics["clean"]["transactions"]
