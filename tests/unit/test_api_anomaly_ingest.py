"""api_anomaly ingestion: every planted defect is quarantined with its reason or repaired and counted,
missing days are reported with their cause, the clean table is typed and equals the truth, and a user's
own CSV (or Parquet) goes through."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from core.settings import ROOT
from domain.api_anomaly import schema as S
from pipelines.api_anomaly.ingest import find_input, ingest
from pipelines.api_anomaly.params import IngestParams
from pipelines.common.params import load_params
from synthetic.api_anomaly import generate

# Defects that destroy the row's key: ingestion cannot tell which (segment, day) they were.
KEY_LOST = {"bad_date", "out_of_period", "invalid_country", "unknown_os"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("api_anomaly")
    p = load_params(ROOT / "params.yaml").api_anomaly
    gen = p.generate.model_copy(
        update={
            "n_countries": 50,
            "earlier_anomalies_per_week": 6,
            "evaluation_anomalies": 20,
            "defect_rate": 0.012,
        }
    )
    raw = root / "raw"
    generate(gen, raw)
    report = ingest(p.ingest, root / "clean", root / "quarantine", root / "metrics.json", raw)
    defects = pd.read_csv(
        raw / S.DEFECTS_FILE, dtype={"line": "Int64"}, keep_default_na=False, na_values=[""]
    )
    return raw, root, report, defects


def read_quarantine(root) -> pd.DataFrame:
    return pd.read_csv(root / "quarantine" / S.QUARANTINE_FILE, dtype=str, keep_default_na=False)


def test_every_planted_defect_is_quarantined_with_its_reason(world):
    raw, root, report, defects = world
    q = read_quarantine(root)
    rows_in = len(pd.read_csv(raw / f"{S.COUNTS}.csv", dtype=str))
    assert report["rows_in"] == rows_in == report["rows_ok"] + report["quarantined"]
    codes = q.set_index(q["source_row"].astype(int))["reason_code"].str.split("; ")
    planted = defects[defects["action"] == "quarantine"]
    assert set(planted["kind"]) >= {
        "bad_date",
        "out_of_period",
        "invalid_country",
        "unknown_os",
        "negative_count",
        "non_numeric_count",
        "missing_count",
        "absurd_count",
        "exact_duplicate",
        "conflicting_duplicate",
    }
    for line, kind, code in planted[["line", "kind", "reason_code"]].itertuples(index=False):
        assert line in codes.index, (line, kind)
        assert code in codes[line], (line, kind, codes[line])
    assert set(q["source_row"].astype(int)) == set(planted["line"]), "nothing else is quarantined"
    assert report["by_reason"] == planted["reason_code"].value_counts().sort_index().to_dict()
    assert (q["reason"] != "").all()
    uk = q[q[S.COUNTRY] == "UK"]
    assert len(uk) and (uk["reason_code"] == "invalid_country").all()


def test_every_planted_repair_is_repaired_and_counted(world):
    raw, root, report, defects = world
    repairs = defects[defects["action"] == "repair"]
    assert set(repairs["kind"]) == {"country_case", "os_spelling", "os_relabel"}
    assert report["repaired"] == repairs["reason_code"].value_counts().sort_index().to_dict()
    clean = pd.read_parquet(root / "clean" / S.CLEAN_COUNTS)
    labels = pd.read_parquet(raw / S.LABELS_FILE)
    got = clean.assign(day=clean[S.DATE].dt.strftime("%Y-%m-%d")).set_index(["day", S.COUNTRY, S.OS])
    truth = labels.assign(day=labels[S.DATE].dt.strftime("%Y-%m-%d")).set_index(["day", S.COUNTRY, S.OS])
    keys = list(zip(repairs[S.DATE], repairs[S.COUNTRY], repairs[S.OS], strict=True))
    assert got.index.isin(keys).sum() == len(set(keys)), "each repaired row is in the clean table"
    assert (got.loc[keys, S.COUNT].to_numpy() == truth.loc[keys, "count_true"].to_numpy()).all()


def test_missing_days_are_reported_with_their_cause(world):
    _, root, report, defects = world
    gaps = pd.read_csv(root / "clean" / S.MISSING_DAYS_FILE, dtype=str, keep_default_na=False)
    seg_gaps = set(
        zip(*(gaps.loc[gaps["scope"] == "segment", c] for c in (S.DATE, S.COUNTRY, S.OS)), strict=True)
    )
    c_gaps = set(zip(*(gaps.loc[gaps["scope"] == "country", c] for c in (S.DATE, S.COUNTRY)), strict=True))
    missing = defects[defects["kind"] == "missing_day"]
    whole = defects[defects["kind"] == "missing_country_day"]
    assert len(missing) >= 5 and whole[[S.DATE, S.COUNTRY]].drop_duplicates().shape[0] >= 2
    for d, c, o in zip(missing[S.DATE], missing[S.COUNTRY], missing[S.OS], strict=True):
        assert (d, c, o) in seg_gaps or (d, c) in c_gaps, (d, c, o)
    for d, c in zip(whole[S.DATE], whole[S.COUNTRY], strict=True):
        assert (d, c) in c_gaps, (d, c)
    # Every reported gap is explained by a planted defect that removed or spoiled the row; its cause
    # says whether ingestion saw quarantined rows for the key.
    destroyed = defects[
        defects["kind"].isin({"missing_day", "missing_country_day"} | KEY_LOST)
        | (defects["action"].eq("quarantine") & ~defects["kind"].isin(["exact_duplicate"]))
    ]
    explained = set(zip(destroyed[S.DATE], destroyed[S.COUNTRY], destroyed[S.OS], strict=True))
    for r in gaps.itertuples():
        if r.scope == "segment":
            assert (r.date, r.country, r.os) in explained, r
            lost = defects[
                (defects[S.DATE] == r.date) & (defects[S.COUNTRY] == r.country) & (defects[S.OS] == r.os)
            ]
            expect = "absent" if lost["kind"].isin({"missing_day"} | KEY_LOST).all() else "quarantined"
            assert r.cause == expect, r
        else:
            assert int(r.segments) >= 2
    m = report["missing_days"]
    assert m["country_days"] == len(c_gaps) and m["listed"] == len(gaps)
    assert m["segment_days"] == len(seg_gaps) + sum(
        int(n) for n in gaps.loc[gaps["scope"] == "country", "segments"]
    )
    assert sum(m["by_cause"].values()) == len(gaps) and m["dates_without_any_row"] == []


def test_clean_table_is_typed_sorted_and_true(world):
    raw, root, *_ = world
    clean = pd.read_parquet(root / "clean" / S.CLEAN_COUNTS)
    assert list(clean.columns) == S.RAW_COLUMNS
    assert str(clean[S.DATE].dtype) == "datetime64[us, UTC]" and clean[S.COUNT].dtype == "int64"
    assert (clean[S.DATE] == clean[S.DATE].dt.normalize()).all()
    assert not clean.duplicated(S.KEY).any()
    assert clean.equals(clean.sort_values(S.KEY).reset_index(drop=True))
    assert clean[S.OS].isin(S.OS_VALUES).all() and clean[S.COUNTRY].str.fullmatch("[A-Z]{2}").all()
    labels = pd.read_parquet(raw / S.LABELS_FILE)
    merged = labels.merge(clean, on=S.KEY, how="outer", indicator=True)
    both = merged["_merge"] == "both"
    assert (merged.loc[both, S.COUNT] == merged.loc[both, "count_true"]).all(), "clean counts are the truth"
    assert (merged["_merge"] != "right_only").all(), "no key the truth does not have"
    lost = merged[merged["_merge"] == "left_only"]
    assert lost["defect"].notna().all() and len(lost) == len(labels) - len(clean)
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["clean"]["rows"] == len(clean) and metrics["clean"]["requests"] == int(
        clean[S.COUNT].sum()
    )
    assert metrics["clean"]["segments"] == clean[[S.COUNTRY, S.OS]].drop_duplicates().shape[0]
    assert (metrics["clean"]["date_min"], metrics["clean"]["date_max"]) == ("2026-02-01", "2026-04-14")


# --- a user's own export ---------------------------------------------------------------------------------
def user_rows() -> list[dict]:
    rows = []
    for day in pd.date_range("2026-04-01", "2026-04-06"):
        for country, os_name, n in (("US", "ios", 5000), ("US", "android", 4000), ("IN", "android", 90000)):
            rows.append(
                {S.DATE: day.strftime("%Y-%m-%d"), S.COUNTRY: country, S.OS: os_name, S.COUNT: str(n)}
            )
    return rows


@pytest.fixture
def user_folder(tmp_path):
    rows = user_rows()
    rows = [r for r in rows if not (r[S.DATE] == "2026-04-03" and r[S.COUNTRY] == "US" and r[S.OS] == "ios")]
    rows = [
        r for r in rows if not (r[S.DATE] == "2026-04-04" and r[S.COUNTRY] == "IN")
    ]  # a whole country-day
    rows[0][S.COUNTRY] = " us"  # repaired
    rows[1][S.OS] = "Android "  # repaired (case)
    rows[2][S.OS] = "Android OS"  # repaired (alias)

    def row(day: str, country: str, os_name: str) -> dict:
        return next(r for r in rows if (r[S.DATE], r[S.COUNTRY], r[S.OS]) == (day, country, os_name))

    row("2026-04-05", "US", "ios")[S.COUNT] = "50000000"  # 10,000x the segment's median day
    row("2026-04-06", "IN", "android")[S.COUNT] = "99999999999999999999"  # beyond any integer
    rows += [
        {S.DATE: "2026-04-02", S.COUNTRY: "UK", S.OS: "ios", S.COUNT: "10"},  # not ISO: GB
        {S.DATE: "04/02/2026", S.COUNTRY: "US", S.OS: "ios", S.COUNT: "10"},  # not ISO-8601
        {S.DATE: "2026-04-02", S.COUNTRY: "US", S.OS: "blackberry", S.COUNT: "10"},  # unknown OS
        {S.DATE: "2026-04-02", S.COUNTRY: "IN", S.OS: "ios", S.COUNT: "-3"},  # negative
        {S.DATE: "2026-04-02", S.COUNTRY: "IN", S.OS: "web", S.COUNT: "1,234"},  # not a whole number
        {S.DATE: "2026-05-01", S.COUNTRY: "US", S.OS: "ios", S.COUNT: "10"},  # after the period
        {S.DATE: "2026-04-01", S.COUNTRY: "US", S.OS: "android", S.COUNT: "4000"},  # exact duplicate
        {S.DATE: "2026-04-02", S.COUNTRY: "US", S.OS: "android", S.COUNT: "4100"},  # conflicts with 4000
    ]
    folder = tmp_path / "my_export"
    folder.mkdir()
    pd.DataFrame(rows).to_csv(folder / f"{S.COUNTS}.csv", index=False)
    return folder


def params(folder, **kw) -> IngestParams:
    base = load_params(ROOT / "params.yaml").api_anomaly.ingest.model_dump()
    return IngestParams(**{**base, "raw_dir": str(folder), "end": pd.Timestamp("2026-04-30").date(), **kw})


def test_a_users_own_csv_goes_through_with_reasons(user_folder, tmp_path):
    report = ingest(params(user_folder), tmp_path / "clean", tmp_path / "q", tmp_path / "m.json")
    assert report["by_reason"] == {
        "absurd_count": 2,
        "bad_date": 1,
        "conflicting_duplicate": 2,
        "exact_duplicate": 1,
        "invalid_country": 1,
        "negative_count": 1,
        "non_numeric_count": 1,
        "out_of_period": 1,
        "unknown_os": 1,
    }
    assert report["repaired"] == {"mapped_os": 1, "normalized_country": 1, "normalized_os": 1}
    q = pd.read_csv(tmp_path / "q" / S.QUARANTINE_FILE, dtype=str, keep_default_na=False)
    reason = dict(zip(q[S.COUNT] + "|" + q[S.OS], q["reason"], strict=True))
    assert "over 1000x its segment's median day" in reason["50000000|ios"]
    assert "out of the integer range" in reason["99999999999999999999|android"]
    assert "unknown os 'blackberry'" in reason["10|blackberry"]
    assert "appears in several rows that disagree" in reason["4100|android"]
    clean = pd.read_parquet(tmp_path / "clean" / S.CLEAN_COUNTS)
    assert len(clean) == report["rows_ok"] == 13  # 16 rows - absurd - overflow - the conflicting day
    assert report["rows_in"] == 24 and report["quarantined"] == 11
    assert set(clean[S.OS]) == {"ios", "android"} and set(clean[S.COUNTRY]) == {"US", "IN"}
    gaps = pd.read_csv(tmp_path / "clean" / S.MISSING_DAYS_FILE, dtype=str, keep_default_na=False)
    listed = set(zip(gaps[S.DATE], gaps[S.COUNTRY], gaps[S.OS], gaps["scope"], gaps["cause"], strict=True))
    assert listed == {
        ("2026-04-03", "US", "ios", "segment", "absent"),
        ("2026-04-05", "US", "ios", "segment", "quarantined"),  # its only row was absurd
        ("2026-04-02", "US", "android", "segment", "quarantined"),  # conflicting rows
        ("2026-04-04", "IN", "", "country", "absent"),
    }
    assert report["missing_days"]["country_days"] == 1 and report["missing_days"]["segment_days"] == 4


def test_parquet_input_gives_the_same_clean_table(user_folder, tmp_path):
    ingest(params(user_folder), tmp_path / "csv", tmp_path / "q1", tmp_path / "m1.json")
    df = pd.read_csv(user_folder / f"{S.COUNTS}.csv", dtype=str, keep_default_na=False)
    good = df[
        df[S.DATE].str.fullmatch(r"\d{4}-\d{2}-\d{2}") & df[S.COUNT].str.fullmatch(r"-?\d{1,12}")
    ].copy()
    good[S.DATE] = pd.to_datetime(good[S.DATE], utc=True)  # typed columns, as a database export has
    good[S.COUNT] = good[S.COUNT].astype("int64")
    (user_folder / f"{S.COUNTS}.csv").unlink()
    good.to_parquet(user_folder / f"{S.COUNTS}.parquet", index=False)
    ingest(params(user_folder), tmp_path / "pq", tmp_path / "q2", tmp_path / "m2.json")
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "csv" / S.CLEAN_COUNTS), pd.read_parquet(tmp_path / "pq" / S.CLEAN_COUNTS)
    )


def test_clear_errors_for_a_folder_that_does_not_fit(tmp_path, user_folder):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_input(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no api_counts\.csv or api_counts\.parquet"):
        find_input(tmp_path / "empty")
    f = user_folder / f"{S.COUNTS}.csv"
    pd.read_csv(f).drop(columns=[S.OS]).to_csv(f, index=False)
    with pytest.raises(ValueError, match=r"missing required column\(s\) \['os'\]"):
        ingest(params(user_folder), tmp_path / "c", tmp_path / "q", tmp_path / "m.json")
    with pytest.raises(ValueError, match="is after end"):
        params(user_folder, start=pd.Timestamp("2026-05-01").date())
