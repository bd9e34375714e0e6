"""api_anomaly on the platform: the state in Feast (point-in-time), the real-time band check over HTTP
agreeing with the batch detector, and GET /v1/anomalies with its filters. A small generated world, run by
the real stage functions, on the embedded stores."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.band import STATE_FIELDS, band_check, stronger
from core.model_bundle import METADATA_FILE
from core.settings import ROOT, Settings
from domain.api_anomaly import schema as S
from pipelines.api_anomaly.detect import KEYS, load_holidays, run, seasonal_config, write_outputs
from pipelines.api_anomaly.detectors import SeasonalConfig, seasonal_scores, state_frame
from pipelines.common.params import load_params
from synthetic.api_anomaly import generate
from tests.conftest import api_client, embedded_settings

pytestmark = pytest.mark.slow


@dataclass
class AnomalyWorld:
    settings: Settings
    counts: pd.DataFrame
    holidays: pd.DataFrame
    cfg: SeasonalConfig
    features: pd.DataFrame  # segment_baseline as written
    anomalies: pd.DataFrame
    metrics: dict
    root: Path
    raw: Path


@pytest.fixture(scope="module")
def aworld(tmp_path_factory) -> AnomalyWorld:
    root = tmp_path_factory.mktemp("api_anomaly_world")
    settings = embedded_settings(root)
    params = load_params(ROOT / "params.yaml").api_anomaly
    gp = params.generate.model_copy(
        update={"n_countries": 30, "earlier_anomalies_per_week": 5, "evaluation_anomalies": 12}
    )
    raw = root / "raw"
    generate(gp, raw)
    labels = pd.read_parquet(raw / S.LABELS_FILE)
    from pipelines.api_anomaly.ingest import ingest

    ingest(
        params.ingest.model_copy(update={"raw_dir": str(raw)}),
        root / "clean",
        root / "quarantine",
        root / "ingest.json",
        raw,
    )
    counts = pd.read_parquet(root / "clean" / S.CLEAN_COUNTS)
    holidays = load_holidays(raw / S.HOLIDAYS_FILE, params.detect.holiday_min_effect)
    d = params.detect
    cfg = seasonal_config(d)
    result = run(counts, labels, holidays, d.evaluation_days, d.warmup_days, cfg)
    metrics, anomalies = result[0], result[1]
    # what the stage writes: outputs, metrics, the feature table and the band model's folder
    fpath = settings.features_dir / "api_anomaly" / f"{S.BASELINE_TABLE}.parquet"
    cpath = root / "clean" / S.CLEAN_COUNTS
    out = settings.data_dir / "outputs" / "api_anomaly"
    write_outputs(
        counts,
        holidays,
        cfg,
        cpath,
        result,
        out,
        root / "metrics.json",
        fpath,
        settings.models_dir / "api_anomaly",
    )
    features = pd.read_parquet(fpath)
    return AnomalyWorld(settings, counts, holidays, cfg, features, anomalies, metrics, root, raw)


def test_state_for_a_day_never_depends_on_that_day_or_later(aworld: AnomalyWorld):
    """Point-in-time: wreck every count from a day on; the state as of that day must not move."""
    day = aworld.counts["date"].max() - pd.Timedelta(days=10)
    wrecked = aworld.counts.copy()
    late = wrecked["date"] >= day
    wrecked.loc[late, "count"] = wrecked.loc[late, "count"] * 7 + 1000
    a = state_frame(aworld.counts, KEYS, aworld.cfg, aworld.holidays)
    b = state_frame(wrecked, KEYS, aworld.cfg, aworld.holidays)
    key = [*KEYS, "date"]
    a, b = a[a["date"] <= day].set_index(key).sort_index(), b[b["date"] <= day].set_index(key).sort_index()
    pd.testing.assert_frame_equal(a, b)
    # ... while the days after it do see the change (the comparison above could not pass vacuously)
    later = day + pd.Timedelta(days=2)
    full_a = state_frame(aworld.counts, KEYS, aworld.cfg, aworld.holidays)
    full_b = state_frame(wrecked, KEYS, aworld.cfg, aworld.holidays)
    both = full_a[full_a["date"] == later].merge(full_b, on=key, suffixes=("", "_wrecked"), how="left")
    assert len(both) and not np.allclose(both["level"], both["level_wrecked"].fillna(-1.0))


def test_feast_serves_the_state_point_in_time(aworld: AnomalyWorld):
    """Feast's historical retrieval of `segment_baseline` for (segment, day) rows gives the table's state
    of that day: the training/serving contract for this model."""
    from core.feature_store import apply_definitions, open_store

    store = open_store(aworld.settings)
    apply_definitions(store, aworld.settings)
    f = aworld.features
    sample = f.sample(40, random_state=1)
    entity_df = pd.DataFrame(
        {
            S.SEGMENT_KEY: sample[S.SEGMENT_KEY].to_numpy(),
            "event_timestamp": sample["event_timestamp"].to_numpy(),
        }
    )
    got = store.get_historical_features(
        entity_df=entity_df, features=store.get_feature_service("api_anomaly_v1")
    ).to_df()
    merged = got.merge(sample, on=[S.SEGMENT_KEY, "event_timestamp"], suffixes=("", "_table"))
    assert len(merged) == len(sample)
    for c in STATE_FIELDS:
        np.testing.assert_allclose(merged[c].astype(float), merged[f"{c}_table"].astype(float), rtol=1e-12)


def test_band_check_from_the_stored_state_equals_the_batch_detector(aworld: AnomalyWorld):
    """The real-time check, from the stored state alone, gives the batch detector's series score: the one-day
    score, or the drift evidence where that is stronger (the hierarchy is batch-only)."""
    scored = seasonal_scores(aworld.counts, KEYS, aworld.cfg, aworld.holidays).dropna(subset=["score"])
    scored = scored[~scored["holiday"]]  # the real-time check has no holiday calendar (report: limitations)
    drifted = scored[scored["drift_score"].abs() > scored["score"].abs()]
    rows = pd.concat(
        [scored.sample(200, random_state=2), drifted.sample(min(len(drifted), 50), random_state=2)]
    )
    rows = rows.merge(aworld.features.rename(columns={"event_timestamp": "date"}), on=[*KEYS, "date"])
    assert len(rows) >= 200 + 10  # drifted rows are there to compare, not only one-day scores
    drift = (aworld.cfg.drift_days, aworld.cfg.drift_clip)
    for r in rows.itertuples():
        c = band_check({f: getattr(r, f) for f in STATE_FIELDS}, r.date, r.count, 4.0, drift)
        want = float(stronger(r.score, r.drift_score))
        assert c["score"] == pytest.approx(want, rel=1e-9, abs=1e-9)
        assert c["one_day_score"] == pytest.approx(r.score, rel=1e-9, abs=1e-9)
        assert c["expected"] == pytest.approx(r.expected, rel=1e-9)
        assert c["is_anomaly"] == (abs(want) >= 4.0)


@pytest.fixture(scope="module")
def aclient(aworld: AnomalyWorld):

    from core.fast_materialize import materialize_fast
    from core.feature_store import apply_definitions, open_store

    store = open_store(aworld.settings)
    apply_definitions(store, aworld.settings)
    materialize_fast(store, ["segment_baseline"], datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC))
    with api_client(aworld.settings) as client:
        yield client


def test_real_time_check_says_whether_a_count_is_anomalous(aworld: AnomalyWorld, aclient):
    meta = aclient.get("/v1/models/api_anomaly").json()
    threshold = json.loads((aworld.settings.models_dir / "api_anomaly" / METADATA_FILE).read_text())["extra"][
        "threshold"
    ]
    latest = aworld.features[aworld.features["event_timestamp"] == aworld.features["event_timestamp"].max()]
    row = latest.sort_values("level").iloc[-1]  # the biggest series, state as of the day after the data
    day = row["event_timestamp"]
    band = band_check(row.to_dict(), day, 0, threshold)
    counts = [band["expected"], band["expected"] * 0.5, band["upper"] * 1.01]
    body = {
        "entities": {"country": [row["country"]] * 3, "os": [row["os"]] * 3},
        "features": {"date": [day.strftime("%Y-%m-%d")] * 3, "count": counts},
    }
    r = aclient.post("/v1/models/api_anomaly/predict", json=body)
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    assert meta["name"] == "api_anomaly"
    assert [p["is_anomaly"] for p in got] == [False, True, True]
    assert got[0]["entity"] == {"segment": f"{row['country']}:{row['os']}"}
    assert {"one_day_score", "drift_score", "threshold"} <= set(got[0])
    assert abs(got[0]["prediction"]) < 1e-6 and got[1]["prediction"] < -threshold
    assert got[1]["lower"] == pytest.approx(band["lower"]) and got[1]["expected"] == pytest.approx(
        band["expected"]
    )
    # the composite key itself works too, and an unknown series is reported, not guessed
    r2 = aclient.post(
        "/v1/models/api_anomaly/predict",
        json={
            "entities": {"segment": [got[0]["entity"]["segment"], "ZZ:android"]},
            "features": {"date": ["2026-04-15"] * 2, "count": [1.0, 1.0]},
        },
    )
    assert r2.status_code == 200, r2.text
    unknown = r2.json()["predictions"][1]
    assert (
        unknown["found_in_online_store"] is False
        and unknown["prediction"] is None
        and unknown["is_anomaly"] is None
    )
    # the count and the day are required; batch jobs cannot supply them
    no_count = aclient.post(
        "/v1/models/api_anomaly/predict",
        json={"entities": {"country": ["US"], "os": ["ios"]}, "features": {"date": ["2026-04-15"]}},
    )
    assert no_count.status_code == 422 and "count" in no_count.json()["detail"]
    for bad, says in ((["15/04/2026"], "ISO days"), (["2026-04-15"], ">= 0")):
        r = aclient.post(
            "/v1/models/api_anomaly/predict",
            json={
                "entities": {"segment": ["US:ios"]},
                "features": {"date": bad, "count": [-5 if says == ">= 0" else 1]},
            },
        )
        assert r.status_code == 422 and says in r.json()["detail"], r.text
    batch = aclient.post("/v1/models/api_anomaly/batch", json={"entities": {"segment": ["US:ios"]}})
    assert batch.status_code == 422 and "/predict" in batch.json()["detail"]


def test_a_past_day_is_checked_against_the_state_as_of_that_day(aworld: AnomalyWorld, aclient):
    """Point-in-time serving: a request for a past day D is scored against the state as of D (Feast's
    offline store: the row dated D, built from the days before it), not against the online store's latest
    state, which has already seen D (a spike on D moved it) and the days after; a day before the segment's
    first state has no prediction, and says why."""
    meta = json.loads((aworld.settings.models_dir / "api_anomaly" / METADATA_FILE).read_text())
    threshold = meta["extra"]["threshold"]
    drift = (int(meta["params"]["drift_days"]), float(meta["params"]["drift_clip"]))
    f = aworld.features
    last = f["event_timestamp"].max()  # the online row's day: the day after the data
    # the strongest anomaly the detector found, a few days before the online state
    a = aworld.anomalies[aworld.anomalies["date"] < last - pd.Timedelta(days=3)]
    top = a.iloc[a["score"].abs().argmax()]
    day, segment = pd.Timestamp(top["date"]), f"{top['country']}:{top['os']}"
    count = float(
        aworld.counts.loc[
            (aworld.counts["country"] == top["country"])
            & (aworld.counts["os"] == top["os"])
            & (aworld.counts["date"] == day),
            "count",
        ].iloc[0]
    )
    seg = f[f[S.SEGMENT_KEY] == segment]
    as_of_day = seg[seg["event_timestamp"] == day].iloc[0]
    latest = seg[seg["event_timestamp"] == last].iloc[0]
    want = band_check(as_of_day[list(STATE_FIELDS)].to_dict(), day, count, threshold, drift)
    against_latest = band_check(latest[list(STATE_FIELDS)].to_dict(), day, count, threshold, drift)
    assert abs(want["score"] - against_latest["score"]) > 1.0  # the two states answer differently
    assert want["is_anomaly"]

    def ask(days: list[str], counts: list[float]) -> list[dict]:
        body = {"entities": {"segment": [segment] * len(days)}, "features": {"date": days, "count": counts}}
        r = aclient.post("/v1/models/api_anomaly/predict", json=body)
        assert r.status_code == 200, r.text
        return r.json()["predictions"]

    first = seg["event_timestamp"].min()
    today = last.strftime("%Y-%m-%d")
    past, too_early, online = ask(
        [day.strftime("%Y-%m-%d"), (first - pd.Timedelta(days=30)).strftime("%Y-%m-%d"), today],
        [count, count, count],
    )
    assert past["prediction"] == pytest.approx(want["score"], rel=1e-9, abs=1e-9)
    assert past["expected"] == pytest.approx(want["expected"], rel=1e-9)
    assert past["is_anomaly"] is True
    assert past["point_in_time"].startswith(day.strftime("%Y-%m-%d"))  # what state answered
    # no state that early: no prediction, the state reported missing, not the latest state's answer
    assert too_early["prediction"] is None and too_early["is_anomaly"] is None
    assert too_early["found_in_online_store"] is True and "level" in too_early["missing_features"]
    # the online row's own day still reads the online store
    want_online = band_check(latest[list(STATE_FIELDS)].to_dict(), last, count, threshold, drift)
    assert online["prediction"] == pytest.approx(want_online["score"], rel=1e-9, abs=1e-9)
    assert online.get("point_in_time") is None and online["feature_age_seconds"] is not None

    import time

    for label, d in (("online", today), ("past day", day.strftime("%Y-%m-%d"))):
        t0 = time.perf_counter()
        for _ in range(5):
            ask([d], [count])
        print(f"{label}: {(time.perf_counter() - t0) / 5 * 1000:.1f} ms per request")


def test_anomalies_endpoint_filters_the_latest_run(aworld: AnomalyWorld, aclient):
    a = aworld.anomalies
    assert len(a) > 10
    everything = aclient.get("/v1/anomalies", params={"limit": 100000}).json()
    assert everything["total"] == len(a)
    top = a.iloc[a["score"].abs().argmax()]
    c, o = top["country"], top["os"]
    r = aclient.get("/v1/anomalies", params={"country": c.lower(), "os": o}).json()
    assert r["total"] == int(((a["country"] == c) & (a["os"] == o)).sum()) >= 1
    assert all(x["country"] == c and x["os"] == o for x in r["anomalies"])
    day = a["date"].min() + pd.Timedelta(days=3)
    r = aclient.get("/v1/anomalies", params={"start": str(day.date()), "end": str(day.date())}).json()
    assert r["total"] == int((a["date"] == day).sum())
    strong = aclient.get("/v1/anomalies", params={"min_score": 8, "limit": 5}).json()
    assert strong["total"] == int((a["score"].abs() >= 8).sum()) and len(strong["anomalies"]) <= 5
    scores = [abs(x["score"]) for x in strong["anomalies"]]
    assert scores == sorted(scores, reverse=True) and all(s >= 8 for s in scores)
    empty = aclient.get("/v1/anomalies", params={"start": "2026-04-10", "end": "2026-04-01"})
    assert empty.status_code == 200 and empty.json()["total"] == 0  # an empty range matches nothing


def test_anomalies_endpoint_without_a_run_says_what_to_do(tmp_path: Path):

    with api_client(embedded_settings(tmp_path)) as client:
        r = client.get("/v1/anomalies")
    assert r.status_code == 404 and "dvc repro" in r.json()["detail"]


def test_report_has_every_section_its_plots_and_the_metrics(aworld: AnomalyWorld):
    from pipelines.api_anomaly.report import build_report

    out = aworld.root / "docs" / "api_anomaly.md"
    out.parent.mkdir()
    build_report(
        aworld.metrics,
        json.loads((aworld.root / "ingest.json").read_text()),
        pd.read_csv(aworld.root / "quarantine" / S.QUARANTINE_FILE),
        aworld.settings.data_dir / "outputs" / "api_anomaly",
        aworld.raw,
        load_params(ROOT / "params.yaml").api_anomaly,
        out,
    )
    text = out.read_text()
    for section in (
        "## Summary",
        "The data and its quality",
        "## 2. Method",
        "## 3. Evaluation",
        "## 4. Where and when",
        "## 5. The strongest anomalies",
        "## 6. Limitations",
    ):
        assert section in text, section
    assert f"{aworld.metrics['event_f1']:.3f}" in text and f"{aworld.metrics['iqr_event_f1']:.3f}" in text
    assert "exact_duplicate" in text and "found by seasonal" in text
    for png in ("heatmap.png", "top_anomalies.png", "thresholds.png"):
        assert (out.with_suffix("") / png).stat().st_size > 5000, png
        assert f"api_anomaly/{png}" in text
