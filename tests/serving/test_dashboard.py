"""The dashboard's data (`GET /v1/models/{name}/monitoring`) and pages, in process on the small game_ltv world
(a regression model: traffic, backtest by week and by decile; no monitor run yet). The browser test of the
pages with a monitored binary model is in tests/pipeline/test_lifecycle.py."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import api_client, user_ids

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def monitor(materialized):
    with api_client(materialized.settings, actions=("monitor",), models=("game_ltv",)) as c:
        yield c


def test_the_data_needs_the_monitor_action_on_the_model(materialized, monitor):
    with api_client(materialized.settings, actions=("score",)) as scorer:
        r = scorer.get("/v1/models/game_ltv/monitoring")
        assert r.status_code == 403 and "may not monitor" in r.json()["detail"]
    assert monitor.get("/v1/models/game_ltv/monitoring", headers={"Authorization": ""}).status_code == 401
    assert monitor.get("/v1/models/nope/monitoring").status_code == 403  # out of the key's scope
    with api_client(materialized.settings, actions=("monitor",)) as everything:
        assert everything.get("/v1/models/nope/monitoring").status_code == 404
        assert everything.get("/v1/models/game_ltv/monitoring?days=0").status_code == 422


def test_traffic_backtest_and_the_missing_monitor_run_are_reported(materialized, monitor):
    with api_client(materialized.settings, actions=("score",)) as scorer:
        for ids in (user_ids(materialized, 5), user_ids(materialized, 3)):
            assert (
                scorer.post("/v1/models/game_ltv/predict", json={"entities": {"user_id": ids}}).status_code
                == 200
            )
        scorer.app.state.request_log.flush()
    d = monitor.get("/v1/models/game_ltv/monitoring?days=1").json()
    assert d["model"] == "game_ltv" and d["task"] == "regression"
    t = d["traffic"]
    assert sum(t["requests"]) >= 2 and sum(t["rows"]) >= 8 and t["bucket"] == "hour"
    assert all(p50 <= p99 for p50, p99 in zip(t["latency_p50_ms"], t["latency_p99_ms"], strict=True))
    assert "no monitor run yet" in d["drift"]["note"]
    b = d["backtest"]
    holdout = pd.read_csv(materialized.settings.data_dir / "outputs" / "game_ltv" / "holdout_predictions.csv")
    assert b["rows"] == holdout["actual"].notna().sum() and sum(b["n"]) == b["rows"]
    assert b["actual_mean"][0] == pytest.approx(
        holdout.loc[
            pd.to_datetime(holdout["prediction_time"]).dt.to_period("W-SUN").dt.start_time
            == pd.Timestamp(b["weeks"][0]),
            "actual",
        ].mean()
    )
    assert "precision" not in b and b["calibration_by"] == "decile of the prediction"
    assert len(b["calibration"]["predicted"]) == 10 and sum(b["calibration"]["n"]) == b["rows"]
    assert d["kpis"] == []  # the game_ltv spec declares none


def test_the_pages_hold_no_data_and_forbid_other_origins(monitor):
    page = monitor.get("/dashboard/game_ltv", headers={"Authorization": ""})
    assert page.status_code == 200 and "<title>featureplat monitoring</title>" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    js = monitor.get("/dashboard-static/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000
    for bad in ("..%2Fapp.py", "dashboard.html", "%2e%2e/%2e%2e/core/settings.py"):
        assert monitor.get(f"/dashboard-static/{bad}").status_code == 404
    assert "/dashboard" not in monitor.get("/openapi.json").json()["paths"]


def test_a_hand_written_models_kpi_comes_from_its_outcome_table(tmp_path):
    """customer_risk has no spec: its KPI (reviews and confirmed off-boardings per week) is read from the
    outcome table declared in serving/dashboard.py's OUTCOME_KPIS."""
    from core.settings import Settings
    from serving.dashboard import OUTCOME_KPIS, outcome_kpis

    k = OUTCOME_KPIS["customer_risk"]
    settings = Settings(features_dir=tmp_path, redis_url=None, database_url=None)
    assert outcome_kpis(settings, "customer_risk") == []  # no table yet: no KPI, no error
    (tmp_path / "customer_risk").mkdir()
    pd.DataFrame(
        {
            "customer_id": [1, 2, 3, 4, 5, 6],
            # Monday 2026-03-02 .. Sunday 03-08 is one week; 03-09 starts the next
            k.time: pd.to_datetime(
                [
                    "2026-03-02 00:00",
                    "2026-03-05 12:00",
                    "2026-03-08 23:00",
                    "2026-03-09 00:00",
                    "2026-03-20 08:00",
                    "2026-03-21 09:00",
                ],
                utc=True,
            ),
            k.flag: [1, 0, 1, 0, 1, 1],
        }
    ).to_parquet(tmp_path / k.path)
    reviews, offboarded = outcome_kpis(settings, "customer_risk")
    assert (reviews["name"], offboarded["name"]) == ("reviews", "confirmed off-boardings")
    assert reviews["weeks"] == offboarded["weeks"] == ["2026-03-02", "2026-03-09", "2026-03-16"]
    assert reviews["values"] == [3, 1, 2] and offboarded["values"] == [2, 0, 2]
    assert outcome_kpis(settings, "game_ltv") == []


def test_behind_a_path_prefix_the_page_and_the_batch_urls_keep_it(materialized):
    """Served under an ingress's /ai (uvicorn --root-path /ai, deploy/k8s): the page's assets, the data it
    fetches and a batch job's URLs carry the prefix; at the root nothing changes."""
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from tests.live import new_key

    token = new_key(materialized.settings, ("monitor", "batch"), ("game_ltv",))
    auth = {"Authorization": f"Bearer {token}"}
    for root in ("/ai", ""):
        with TestClient(create_app(materialized.settings), root_path=root, headers=auth) as c:
            page = c.get("/dashboard/game_ltv", headers={"Authorization": ""}).text
            assert f'src="{root}/dashboard-static/dashboard.js"' in page and f'content="{root}"' in page
            job = c.post(
                "/v1/models/game_ltv/batch", json={"entities": {"user_id": user_ids(materialized, 3)}}
            )
            assert job.status_code == 202, job.text
            assert job.json()["status_url"] == f"{root}/v1/batch/{job.json()['job_id']}"
            assert job.json()["results_url"].startswith(f"{root}/v1/batch/")
