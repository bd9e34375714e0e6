"""/metrics: what a scrape shows after traffic (in process), and a real Prometheus scraping a running API
with its key and evaluating the alert rules on what it scraped."""

from __future__ import annotations

import shutil
import subprocess
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.settings import ROOT
from tests.conftest import api_client, user_ids
from tests.live import free_port, live_api, new_key

pytestmark = pytest.mark.slow


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_need_the_monitor_action_and_count_requests_predictions_and_ages(materialized):
    with api_client(materialized.settings, actions=("score",)) as scorer:
        assert scorer.get("/metrics").status_code == 403
        ids = user_ids(materialized, 7)
        with api_client(materialized.settings, actions=("monitor",)) as monitor:
            r = monitor.get("/metrics")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            before = _samples(r.text)
            assert (
                scorer.post("/v1/models/game_ltv/predict", json={"entities": {"user_id": ids}}).status_code
                == 200
            )
            scorer.post("/v1/models/game_ltv/predict", json={"entities": {"user_id": [-1]}})  # not stored
            scorer.post("/v1/models/nope/predict", json={"entities": {"user_id": [1]}})  # 404
            scorer.get("/v1/made-up/path")  # unmatched: one series, whatever the path
            assert scorer.get("/metrics").status_code == 403
            after = _samples(monitor.get("/metrics").text)
    route = "/v1/models/{name}/predict"
    diff = lambda name, **lab: _value(after, name, **lab) - _value(before, name, **lab)  # noqa: E731
    assert diff("featureplat_http_requests_total", route=route, model="game_ltv", status="200") == 2
    assert diff("featureplat_http_requests_total", route=route, model="-", status="404") == 1
    assert diff("featureplat_http_requests_total", route="unmatched", model="-", status="404") == 1
    assert diff("featureplat_http_request_duration_seconds_count", route=route, model="game_ltv") == 2
    assert diff("featureplat_prediction_count", model="game_ltv") == 8
    assert diff("featureplat_feature_age_seconds_count", model="game_ltv") == 7  # the unknown id has no age
    assert diff("featureplat_entities_not_in_online_store_total", model="game_ltv") == 1
    assert diff("featureplat_auth_failures_total", status="403") == 1
    assert _value(after, "featureplat_request_log_db_up") == 1
    assert ("featureplat_request_log_spool_files", ()) in after
    assert any(n == "featureplat_model_info" and dict(lab)["model"] == "game_ltv" for n, lab in after)
    assert {dict(lab)["state"] for n, lab in after if n == "featureplat_batch_jobs"} == {
        "queued", "running", "done", "failed"
    }  # fmt: skip


def test_a_real_prometheus_scrapes_the_api_with_its_key_and_evaluates_the_rules(materialized, tmp_path):
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is missing: `make tools` installs Debian's prometheus package"
    s = materialized.settings
    key = new_key(s, ("monitor",))
    scorer = new_key(s, ("score",))
    with live_api(s, tmp_path / "api.log") as url:
        port = free_port()
        (tmp_path / "key").write_text(key)
        (tmp_path / "prometheus.yml").write_text(
            f"""global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [{ROOT / "ops" / "prometheus" / "alerts.yml"}]
scrape_configs:
  - job_name: featureplat-api
    authorization: {{credentials_file: {tmp_path / "key"}}}
    static_configs: [{{targets: ["{url.removeprefix("http://")}"]}}]
"""
        )
        with open(tmp_path / "prometheus.log", "wb") as log:
            proc = subprocess.Popen(
                [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        try:
            ids = user_ids(materialized, 5)
            for _ in range(5):
                r = httpx.post(
                    f"{url}/v1/models/game_ltv/predict",
                    json={"entities": {"user_id": ids}},
                    headers={"Authorization": f"Bearer {scorer}"},
                )
                assert r.status_code == 200, r.text
            api = f"http://127.0.0.1:{port}/api/v1"
            query = 'sum(featureplat_prediction_count{job="featureplat-api", model="game_ltv"})'
            deadline, seen = time.monotonic() + 60, None
            while time.monotonic() < deadline:
                try:
                    res = httpx.get(f"{api}/query", params={"query": query}).json()["data"]["result"]
                    if res and float(res[0]["value"][1]) >= 25:
                        seen = float(res[0]["value"][1])
                        break
                except (httpx.HTTPError, KeyError):
                    pass
                time.sleep(0.5)
            assert seen == 25, (tmp_path / "prometheus.log").read_text()[-2000:]
            target = httpx.get(f"{api}/targets").json()["data"]["activeTargets"][0]
            assert target["health"] == "up" and target["lastError"] == ""
            # the rules load and evaluate on the scraped series without error
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                groups = httpx.get(f"{api}/rules").json()["data"]["groups"]
                rules = [r for g in groups for r in g["rules"]]
                if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules):
                    break
                time.sleep(0.5)
            assert len(rules) == 11 and all(r["health"] == "ok" for r in rules), rules
        finally:
            proc.terminate()
            proc.wait(20)
