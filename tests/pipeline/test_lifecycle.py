"""The whole life of the spam model on a small generated world, with no manual step between the declared
change and the served model:

1. weeks 0-17 have arrived: spam v1 (no `manual_spam_count`) is trained, registered, promoted and served;
2. `manual_spam_count` is declared (its `since: 2`, its history total, `version: 2`: one change to the
   spec); retraining builds the v2 FeatureService next to v1's, trains the challenger on the point-in-time
   training set, gates it against v1 on the same hold-out and promotes it; the running API switches to it
   without a restart while requests keep coming, none failing;
3. the monitor, run on week 17's traffic, finds nothing to act on;
4. weeks 18-33 arrive, spammers having changed tactics in week 20 (the generator's shift): the scheduled
   monitor job (Dagster) sees the champion's quality fall on the labels that arrived, starts a retrain on
   its own, and the new champion scores those weeks better than the old one.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from core import model_registry as mr
from core.feature_store import open_store
from core.layout import Layout
from core.monitoring import latest_verdict
from core.settings import ROOT
from pipelines.lifecycle import registry as reg
from pipelines.lifecycle.monitor import monitor
from pipelines.lifecycle.orchestrator import Platform, build
from pipelines.lifecycle.params import LifecycleParams, ScheduleParams
from pipelines.lifecycle.retrain import refresh_data, retrain
from pipelines.tabular.ingest import PREDICTION_TIME
from pipelines.tabular.training_set import SPLIT
from synthetic import spam
from tests.conftest import api_client, embedded_settings, platform_overrides

pytestmark = pytest.mark.slow

START = date(2025, 6, 2)  # the generator's first Monday
WEEKS, LAUNCH, SHIFT = 34, 4, 20  # manual_spam_count from week 4; spammers change tactics in week 20
FIRST_CUT, SECOND_CUT = 17, 33  # the data has arrived up to these weeks


def week_end(week: int) -> str:
    return (START + timedelta(weeks=week + 1)).isoformat()


def arrive(full, raw, week: int) -> None:
    """The files as they stand at the end of `week`: its rows, and verdicts only 14 days after their week."""
    cut = week_end(week)
    calls = pd.read_csv(full / "calls.csv", dtype=str, keep_default_na=False)
    calls[calls["week_end"] <= cut].to_csv(raw / "calls.csv", index=False)
    lab = pd.read_csv(full / "labels.csv", dtype=str, keep_default_na=False)
    lab = lab[lab["prediction_time"] <= cut].copy()
    lab.loc[pd.to_datetime(lab["prediction_time"]) + pd.Timedelta(days=14) > pd.Timestamp(cut), "is_spam"] = (
        ""
    )
    lab.to_csv(raw / "labels.csv", index=False)
    oracle = pd.read_csv(full / "oracle.csv", dtype=str, keep_default_na=False)
    oracle[oracle["prediction_time"] <= cut].to_csv(raw / "oracle.csv", index=False)


def spec_v2() -> dict:
    """specs/spam.yaml as committed (version 2), with fewer trees for a quick test."""
    spec = yaml.safe_load((ROOT / "specs" / "spam.yaml").read_text())
    spec["model"]["params"].update(iterations=500)
    spec.pop("demo_data")
    return spec


def spec_v1() -> dict:
    """The same spec before the change: no `since`, no history total of the marks, version 1."""
    spec = spec_v2()
    spec["version"] = 1
    col = spec["sources"][0]["columns"]["manual_spam_count"]
    del col["since"], col["reason"]
    col["feature"] = False
    spec["sources"][0]["history"]["sum"].remove("manual_spam_count")
    return spec


def write(settings, spec: dict) -> None:
    settings.specs_dir.mkdir(parents=True, exist_ok=True)
    (settings.specs_dir / "spam.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("lifecycle")
    full, raw = root / "full", root / "data" / "raw" / "spam"
    raw.mkdir(parents=True)
    spam.generate(
        full, n_callers=6000, seed=7, weeks=WEEKS, launch_week=LAUNCH, shift_week=SHIFT, review_rate=0.3
    )
    settings = embedded_settings(root, specs_dir=root / "specs", model_poll_s=0.1)
    return settings, full, raw


def traffic(full, week: int, n: int = 1500, seed: int = 0) -> list[int]:
    """Callers active in `week`, as the app would look them up."""
    calls = pd.read_csv(full / "calls.csv", usecols=["id", "week"], dtype=str)
    ids = calls.loc[calls["week"] == (START + timedelta(weeks=week)).isoformat(), "id"].astype(int).unique()
    return [int(i) for i in np.random.default_rng(seed).choice(ids, size=min(n, len(ids)), replace=False)]


def score(client, ids: list[int]) -> list[str]:
    versions = []
    for i in range(0, len(ids), 100):
        r = client.post("/v1/models/spam/predict", json={"entities": {"id": ids[i : i + 100]}})
        assert r.status_code == 200, r.text
        versions.append(r.json()["registry_version"])
    return versions


def test_a_new_feature_from_declaration_to_production_and_retraining_that_starts_itself(world):
    settings, full, raw = world
    lp = LifecycleParams()

    # 1. v1 trained, registered, promoted, served
    arrive(full, raw, FIRST_CUT)
    write(settings, spec_v1())
    d1 = retrain(settings, "spam", lp)
    assert d1.promote and d1.reason == "no champion yet"
    with api_client(settings) as client:
        served = client.get("/v1/models/spam").json()["served"]
        assert served["registry_version"] == "1" and served["feature_service"] == "spam_v1"
        assert set(score(client, traffic(full, FIRST_CUT)[:300])) == {"1"}

        # 2. the declared change: only `since`, the history total and the version differ
        v1, v2 = spec_v1(), spec_v2()
        assert v2["version"] == 2 and v2["sources"][0]["columns"]["manual_spam_count"]["since"] == 2
        assert {k: v for k, v in v1.items() if k not in ("version", "sources")} == {
            k: v for k, v in v2.items() if k not in ("version", "sources")
        }
        write(settings, v2)
        errors: list[str] = []
        seen: list[str] = []
        stop = threading.Event()
        ids = traffic(full, FIRST_CUT, n=50, seed=3)

        def hammer() -> None:  # a client that keeps scoring through the build, the gate and the switch
            while not stop.is_set():
                r = client.post("/v1/models/spam/predict", json={"entities": {"id": ids}})
                if r.status_code != 200:
                    errors.append(r.text)
                else:
                    seen.append(r.json()["registry_version"])

        t = threading.Thread(target=hammer)
        t.start()
        try:
            d2 = retrain(settings, "spam", lp)
            deadline = time.time() + 30
            while time.time() < deadline and (not seen or seen[-1] != "2"):
                time.sleep(0.1)
        finally:
            stop.set()
            t.join()
        assert d2.promote and "beats it" in d2.reason and "same" in d2.reason, d2.reason
        assert d2.challenger > d2.champion + lp.gate.min_improvement
        assert not errors, errors[:3]
        assert seen[0] == "1" and seen[-1] == "2" and set(seen) == {"1", "2"}
        assert all(v == "2" for v in seen[seen.index("2") :])  # v1 answered until the switch, then v2
        served = client.get("/v1/models/spam").json()["served"]
        assert served["registry_version"] == "2" and served["feature_service"] == "spam_v2"
        store = open_store(settings)
        fs1, fs2 = store.get_feature_service("spam_v1"), store.get_feature_service("spam_v2")
        names = [{f.name for p in fs.feature_view_projections for f in p.features} for fs in (fs1, fs2)]
        assert names[1] - names[0] == {
            "manual_spam_count",
            "manual_spam_count_total",
            "manual_spam_count_rows",
            "manual_spam_count_share",
        }
        metrics = json.loads((settings.data_dir.parent / "metrics" / "spam.json").read_text())
        assert metrics["roc_auc_v2"] > metrics["roc_auc_v1"]
        # the weeks before the app collected the marks stay empty, not zeros
        calls = pd.read_parquet(Layout.of(settings, "spam").features / "calls.parquet")
        early = calls["event_timestamp"] <= pd.Timestamp(week_end(LAUNCH - 1), tz="UTC")
        assert calls.loc[early, "manual_spam_count"].isna().all()
        assert calls.loc[~early, "manual_spam_count"].notna().mean() > 0.99

        # 3. week 17's traffic (the hammering client's repeats left out): nothing to act on
        mark = datetime.now(UTC)
        score(client, traffic(full, FIRST_CUT))
        time.sleep(0.3)  # the request log's writer flushes every 50 ms
        quiet = monitor(settings, "spam", lp.monitor, since=mark)
        assert quiet.rows == 1500 and not quiet.retrain, quiet.reasons
        assert quiet.drift_share is not None and quiet.weekly_quality[0]["labelled"] > 1000

        # 4. weeks 18-33 arrive; the scheduled monitor job sees the shift and retrains on its own
        arrive(full, raw, SECOND_CUT)
        refresh_data(settings)
        score(client, traffic(full, SECOND_CUT, seed=1))
        time.sleep(0.3)
        overrides = platform_overrides(settings)
        defs = build(LifecycleParams(schedule=ScheduleParams(retries=0)))
        old = mr.version_by_alias(settings, "spam", mr.CHAMPION)
        res = defs.resolve_job_def("monitor_job").execute_in_process(
            resources={"platform": Platform(overrides=overrides)}
        )
        assert res.success
        assert res.output_for_node("monitor_models") == ["spam"]
        verdict = json.loads(latest_verdict(settings, "spam").read_text())
        assert verdict["retrain"] and any(r.startswith("backtest") for r in verdict["reasons"]), verdict
        assert verdict["report"].endswith(".html") and verdict["backtest_report"].endswith("_backtest.html")
        assert all(Path(verdict[k]).stat().st_size > 100_000 for k in ("report", "backtest_report"))
        (row,) = res.output_for_node("retrain_flagged")
        assert row["promoted"], row
        new = mr.version_by_alias(settings, "spam", mr.CHAMPION)
        assert str(new.version) == "3" and str(old.version) == "2"
        deadline = time.time() + 30
        while time.time() < deadline and score(client, ids[:5]) != ["3"]:
            time.sleep(0.1)
        assert score(client, ids[:5]) == ["3"]

    # the new champion scores the weeks after the shift better than the old one, on the same rows
    ts = pd.read_parquet(Layout.of(settings, "spam").training_set)
    test = ts[ts[SPLIT] == "test"]
    assert (test[PREDICTION_TIME] > pd.Timestamp(week_end(SHIFT), tz="UTC")).all()
    new_auc, old_auc, n = reg.same_holdout(
        settings, "spam", mr.fetch_bundle(settings, old), mr.fetch_bundle(settings, new), "roc_auc"
    )
    assert n == len(test) and new_auc > old_auc + 0.01, (new_auc, old_auc)


def test_the_dashboard_shows_that_story_in_a_browser(world, tmp_path):
    """Runs on the world the story above left (a module's tests run in order): traffic in the request log,
    the monitor's two verdicts, the hold-out of the last model. Headless Chromium (Debian's) driven by
    Playwright loads the page through a running API with a key, and finds every chart drawn with data and no
    console error. UPDATE_SCREENSHOTS=1 saves the screenshot to docs/dashboard.png (the README's)."""
    from playwright.sync_api import sync_playwright

    from tests.live import live_api, new_key

    settings, _, _ = world
    assert latest_verdict(settings, "spam") is not None, "the lifecycle story must run first"
    key = new_key(settings, ("monitor",), ("spam",))
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: `make tools` installs Debian's chromium"
    with live_api(settings, tmp_path / "api.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(f"{url}/dashboard/spam")
        page.fill("#key", "fpk_000000000000_wrong")  # a wrong key: refused, the form comes back
        page.click("button[type=submit]")
        page.wait_for_selector("#error:not([hidden])")
        assert "API key" in page.inner_text("#error")
        problems.clear()  # the browser logs the refused request's 401 as an error
        page.fill("#key", key)
        page.click("button[type=submit]")
        page.wait_for_selector("body[data-loaded=true]", timeout=30_000)
        charts = page.eval_on_selector_all(
            ".chart",
            """els => els.map(e => ({id: e.id, points: (e.data || []).reduce(
                (n, t) => n + ((t.y || t.x || []).filter(v => v !== null).length), 0)}))""",
        )
        ids = {c["id"] for c in charts}
        assert {"traffic", "predictions", "drift-history", "drift-features", "backtest-weekly", "calibration",
                "backtest-quality", "live-quality", "kpi-0", "kpi-1"} <= ids, ids  # fmt: skip
        assert all(c["points"] > 0 for c in charts), charts
        assert page.locator(".note").count() == 0, page.locator(".note").all_inner_texts()
        assert "feature drift" in page.inner_text("#drift-reasons") or "backtest" in page.inner_text(
            "#drift-reasons"
        )
        assert not problems, problems
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 50_000
        if os.environ.get("UPDATE_SCREENSHOTS"):
            shutil.copy(shot, ROOT / "docs" / "dashboard.png")
        # the index lists the models the key sees, and only those
        page.goto(f"{url}/dashboard")
        page.wait_for_selector("body[data-loaded=true]")
        assert page.locator("#models li").all_inner_texts()[0].startswith("spam")
        browser.close()
