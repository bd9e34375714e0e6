"""Ingest a spec'd model's sources and label table: every row validated against the spec's declarations,
bad rows quarantined with a reason code and a sentence, clean rows written as the tables Feast reads.

Per column (core.spec.ColumnSpec): the type (int, float, string, bool), emptiness unless ``nullable``, the
closed set ``values`` (a different letter case is repaired to the declared spelling and counted),
``min``/``max``. Per table: a missing/unparsable join key or timestamp, exact duplicates (the first is
kept) and conflicting rows for the same key and time (all quarantined: which one is true is unknown).
Label rows also need a known label value (empty = not known yet, kept for scoring) and an entity that
some source knows (else its features would all be missing without anyone noticing).

Outputs: ``<features>/<source>.parquet`` (join key, ``event_timestamp``, declared columns),
``data/clean/<model>/labels.parquet``, ``data/quarantine/<model>/<table>.csv``, and the counts in
``metrics/<model>_ingest.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from core.layout import Layout
from core.settings import Settings
from core.spec import CheckSpec, ColumnSpec, LabelSpec, SourceSpec, Spec
from pipelines.common.stage import write_metrics
from pipelines.common.validation import SOURCE_ROW, RowValidator, read_raw

log = logging.getLogger(__name__)
EVENT_TIMESTAMP = "event_timestamp"
PREDICTION_TIME = "prediction_time"
LABEL_TABLE = "labels"
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def read_table(layout: Layout, settings: Settings, paths: list[str], table: str | None, columns: list[str]):
    """The raw rows as text (CSV) or typed (Parquet, PostgreSQL), with their row number and file."""
    if table and settings.database_url:
        import sqlalchemy as sa

        engine = sa.create_engine(settings.database_url)
        with engine.connect() as conn:
            df = pd.read_sql(sa.text(f"SELECT * FROM {table}"), conn)
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise ValueError(f"table {table}: missing required column(s) {missing}; found {list(df.columns)}")
        df = df[columns].astype(object).where(df[columns].notna(), "").astype(str)
        df.insert(0, SOURCE_ROW, np.arange(len(df)))
        df["source_file"] = table
        return df
    if not paths:
        raise ValueError(f"table {table} needs DATABASE_URL (no `path` declared)")
    frames = []
    for p in paths:
        path = layout.resolve(p)
        if not path.exists():
            raise FileNotFoundError(f"{path}: declared in spec {layout.spec.name} but absent")
        df = read_raw(path, columns)
        df["source_file"] = path.name
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def utc(t) -> pd.Timestamp:
    """A time as a UTC timestamp (naive times are taken as UTC, as everywhere in the platform)."""
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def parse_column(v: RowValidator, name: str, col: ColumnSpec) -> pd.Series:
    """One declared column, typed; failing rows rejected with `<check>_<column>` reason codes."""
    text = v.text(name)
    empty = text.isna() | (text == "")
    if not col.nullable:
        v.reject(empty, f"missing_{name}", f"{name} is missing (declared not nullable)")
    if col.type == "int" and col.is_categorical:
        text = whole_text(text)  # 2, "2", 2.0 and "2.0" are one category: "2"
    if col.type == "string" or (col.type == "int" and col.is_categorical):
        out = text.mask(empty)
        if col.values is not None:
            allowed = [str(x) for x in col.values]
            exact = out.isin(allowed)
            by_lower = {a.lower(): a for a in allowed}
            fixed = out.str.lower().map(by_lower)
            repair = ~empty & ~exact & fixed.notna()
            v.repaired(repair, f"normalized_{name}")
            out = out.where(~repair, fixed)
            shown = ", ".join(allowed) if len(allowed) <= 12 else f"one of {len(allowed)} declared values"
            v.reject(
                ~empty & ~out.isin(allowed),
                f"unknown_{name}",
                lambda r: f"unknown {name} '" + r[name].astype(str) + f"' (expected {shown})",
            )
        return out.astype("string")
    if col.type == "bool":
        low = text.str.lower()
        val = pd.Series(pd.NA, index=text.index, dtype="Int64")
        val[low.isin(_TRUE).fillna(False)] = 1
        val[low.isin(_FALSE).fillna(False)] = 0
        v.reject(
            ~empty & val.isna(),
            f"not_bool_{name}",
            lambda r: f"{name} is not true/false: '" + r[name].astype(str) + "'",
        )
        return val
    num = pd.to_numeric(text.where(~empty), errors="coerce")
    finite = num.notna() & np.isfinite(num)
    kind = "a whole number" if col.type == "int" else "a number"
    bad = ~empty & ~finite
    if col.type == "int":
        not_whole = finite & (num != np.floor(num))
        bad |= not_whole | (finite & (num.abs() >= 2.0**63))
    v.reject(bad, f"not_{col.type}_{name}", lambda r: f"{name} is not {kind}: '" + r[name].astype(str) + "'")
    ok = finite & ~bad
    if col.min is not None:
        low = ok & (num < col.min)
        v.reject(low, f"below_min_{name}", lambda r: f"{name} is below {col.min:g}: " + r[name].astype(str))
        ok &= ~low
    if col.max is not None:
        high = ok & (num > col.max)
        v.reject(high, f"above_max_{name}", lambda r: f"{name} is above {col.max:g}: " + r[name].astype(str))
        ok &= ~high
    if col.values is not None:
        allowed_num = {float(x) for x in col.values}
        unknown = ok & ~num.isin(allowed_num)
        v.reject(
            unknown,
            f"unknown_{name}",
            lambda r: f"unknown {name} " + r[name].astype(str) + f" (expected one of {sorted(allowed_num)})",
        )
    num = num.where(ok)
    return num.round().astype("Int64") if col.type == "int" else num.astype("float64")


def whole_text(text: pd.Series) -> pd.Series:
    """Values that are whole numbers written as text ("2", "2.0", "2e0"; a float column of a Parquet file or
    a database) as one spelling, "2"; everything else unchanged."""
    num = pd.to_numeric(text, errors="coerce")
    whole = num.notna() & np.isfinite(num) & (num == np.floor(num)) & (num.abs() < 2.0**53)
    out = text.copy()
    out[whole] = num[whole].astype("int64").astype(str)
    return out


def parse_key(v: RowValidator, spec: Spec) -> pd.Series:
    key = spec.entity.join_key
    if spec.entity.key_type == "int":
        return v.integer(key, f"bad_{key}", min_value=None)
    return v.required(key)


def _finish(v: RowValidator, raw: pd.DataFrame, parsed: dict[str, pd.Series], key_cols: list[str]):
    ok_so_far = ~v.rejected()
    for c in key_cols:
        ok_so_far &= parsed[c].notna()
    frame = pd.DataFrame(parsed)
    # Duplicates are judged on the parsed values (" F" and "F" are the same row), as text, among the rows
    # whose key repeats only (formatting every row as text cost half of a 2M-row ingest).
    ok_keys = frame.loc[ok_so_far, key_cols]
    repeated = pd.Series(False, index=frame.index)
    repeated.loc[ok_keys.index] = ok_keys.duplicated(keep=False).to_numpy()
    values = frame[repeated].astype("string").fillna("").reindex(frame.index, fill_value="")
    v.duplicates(key_cols, parsed_ok=ok_so_far & repeated, values=values)
    ok, quarantine, reasons = v.split()
    report = v.report(ok, quarantine, reasons)
    return frame[ok].reset_index(drop=True), quarantine, report


def apply_check(v: RowValidator, parsed: dict[str, pd.Series], check: CheckSpec) -> None:
    """Quarantine the rows that break a declared rule; a row missing one of its values is not judged (its
    emptiness is the column's own check)."""
    values = pd.DataFrame({c: pd.to_numeric(parsed[c], errors="coerce").astype(float) for c in check.columns})
    judged = values.notna().all(axis=1)
    holds = values.eval(check.rule, engine="python").astype(bool)
    sentence = check.reason or f"breaks {check.rule}"

    def message(rows: pd.DataFrame) -> pd.Series:
        shown = [c + "=" + rows[c].astype(str) for c in check.columns]
        return f"{sentence} (" + pd.concat(shown, axis=1).agg(", ".join, axis=1) + ")"

    v.reject(judged & ~holds, check.code, message)


def validate_source(raw: pd.DataFrame, spec: Spec, source: SourceSpec):
    v = RowValidator(raw)
    key = spec.entity.join_key
    parsed: dict[str, pd.Series] = {key: parse_key(v, spec)}
    if source.timestamp:
        ts = v.timestamp(
            source.timestamp, f"bad_{source.timestamp}", missing_code=f"missing_{source.timestamp}"
        )
        parsed[EVENT_TIMESTAMP] = ts
    else:
        parsed[EVENT_TIMESTAMP] = pd.Series(utc(source.as_of), index=raw.index)
    for c, col in source.columns.items():
        parsed[c] = parse_column(v, c, col)
    for check in source.checks:
        apply_check(v, parsed, check)
    clean, quarantine, report = _finish(v, raw, parsed, [key, EVENT_TIMESTAMP])
    # microseconds: what PostgreSQL and DuckDB store (Feast's own `feast materialize` reads through DuckDB,
    # which cannot cast tz-aware nanoseconds)
    clean[EVENT_TIMESTAMP] = pd.to_datetime(clean[EVENT_TIMESTAMP], utc=True).dt.as_unit("us")
    if spec.entity.key_type == "int":
        clean[key] = clean[key].astype("int64")
    if source.history is not None:
        clean = add_history(clean, source, key)
    return clean, quarantine, report


def add_history(clean: pd.DataFrame, source: SourceSpec, key: str) -> pd.DataFrame:
    """The source's history features (core.spec.HistorySpec): running totals per entity over its clean
    rows in time order, each row's including itself (the row is known from its timestamp on, and so is
    everything before it). Quarantined rows count nowhere."""
    out = clean.sort_values([key, EVENT_TIMESTAMP], kind="stable").reset_index(drop=True)
    by = out[key]
    derived = source.derived_columns
    for c in source.history.sum:
        values = pd.to_numeric(out[c], errors="coerce").astype("Float64")
        total = values.fillna(0).groupby(by, sort=False).cumsum()
        out[f"{c}_total"] = total.astype("Float64" if derived[f"{c}_total"].type == "float" else "Int64")
        if f"{c}_rows" in derived:
            out[f"{c}_rows"] = values.notna().astype("int64").groupby(by, sort=False).cumsum().astype("Int64")
    h = source.history
    if h.rows:
        out[h.rows] = (out.groupby(key, sort=False).cumcount() + 1).astype("Int64")
    if h.share_of:
        base = out[f"{h.share_of}_total"].astype("Float64")
        base = base.where(base != 0)  # no calls yet: no share (missing, not 0)
        for c in h.sum:
            if c != h.share_of:
                out[f"{c}_share"] = out[f"{c}_total"].astype("Float64") / base
        if h.rows:
            out[f"{h.share_of}_per_row"] = out[f"{h.share_of}_total"].astype("Float64") / out[h.rows].astype(
                "Float64"
            )
    return out


def label_values(v: RowValidator, label: LabelSpec) -> pd.Series:
    """The label as the model learns it: binary 1/0, multiclass the class text, regression a number;
    <NA> where empty (not known yet)."""
    name = label.column
    text = v.text(name)
    empty = text.isna() | (text == "")
    if label.task != "regression":
        text = whole_text(text)  # a 0/1 label read as 1.0/0.0 (a float column with missing values)
    if label.task == "regression":
        num = pd.to_numeric(text.where(~empty), errors="coerce")
        bad = ~empty & (num.isna() | ~np.isfinite(num))
        v.reject(bad, f"bad_{name}", lambda r: f"label {name} is not a number: '" + r[name].astype(str) + "'")
        return num.where(~bad).astype("float64")
    if label.task == "binary":
        pos, neg = label.binary_values
        pos, neg = whole_text(pd.Series([pos, neg], dtype="string")).tolist()
        mapping = {pos.lower(): 1, neg.lower(): 0}
        expected = f"{pos} or {neg}"
    else:
        declared = [str(c) for c in label.classes or []]
        spelled = whole_text(pd.Series(declared, dtype="string")).tolist()
        mapping = {sp.lower(): c for sp, c in zip(spelled, declared, strict=True)}
        expected = ", ".join(str(c) for c in label.classes or [])
    val = text.str.lower().map(mapping)
    bad = ~empty & val.isna()
    v.reject(
        bad,
        f"bad_{name}",
        lambda r: (
            f"label {name} '" + r[name].astype(str) + f"' is not one of the declared values ({expected})"
        ),
    )
    return val.astype("Int64") if label.task == "binary" else val.astype("string")


def validate_labels(raw: pd.DataFrame, spec: Spec, known_entities: set):
    label = spec.label
    v = RowValidator(raw)
    key = spec.entity.join_key
    parsed: dict[str, pd.Series] = {key: parse_key(v, spec)}
    pt = label.prediction_time
    parsed[PREDICTION_TIME] = v.timestamp(pt, f"bad_{pt}", missing_code=f"missing_{pt}")
    for c, col in {**label.request_features, **label.columns}.items():
        parsed[c] = parse_column(v, c, col)
    parsed[label.column] = label_values(v, label)
    unknown = parsed[key].notna() & ~parsed[key].isin(known_entities)
    v.reject(
        unknown,
        f"unknown_{spec.entity.name}",
        lambda r: (
            f"{key} " + r[key].astype(str) + " is in no source table (its features would all be missing)"
        ),
    )
    # one prediction per entity, time and request (two offers to one client on one day are two rows)
    clean, quarantine, report = _finish(v, raw, parsed, [key, PREDICTION_TIME, *label.request_features])
    # microseconds, as every table the platform writes
    clean[PREDICTION_TIME] = pd.to_datetime(clean[PREDICTION_TIME], utc=True).dt.as_unit("us")
    if spec.entity.key_type == "int":
        clean[key] = clean[key].astype("int64")
    report["labeled"] = int(clean[label.column].notna().sum())
    report["unlabeled"] = int(clean[label.column].isna().sum())
    return clean, quarantine, report


def _write_quarantine(layout: Layout, table: str, quarantine: pd.DataFrame) -> None:
    layout.quarantine.mkdir(parents=True, exist_ok=True)
    quarantine.to_csv(layout.quarantine / f"{table}.csv", index=False)


def run(settings: Settings, layout: Layout) -> dict:
    spec = layout.spec
    key = spec.entity.join_key
    layout.features.mkdir(parents=True, exist_ok=True)
    for stale in layout.features.glob("*.parquet"):  # a source removed from the spec must not linger
        stale.unlink()
    report: dict[str, dict] = {}
    known: set = set()
    for source in spec.sources:
        cols = [key, *([source.timestamp] if source.timestamp else []), *source.columns]
        raw = read_table(layout, settings, source.paths, source.table, cols)
        clean, quarantine, r = validate_source(raw, spec, source)
        clean.to_parquet(layout.features / f"{source.name}.parquet", index=False)
        _write_quarantine(layout, source.name, quarantine)
        known.update(clean[key].unique().tolist())
        report[source.name] = r
        log.info(
            "%s/%s: %s rows ok, %s quarantined %s",
            spec.name,
            source.name,
            r["rows_ok"],
            r["quarantined"],
            r["by_reason"],
        )
    label = spec.label
    cols = [key, label.prediction_time, label.column, *label.request_features, *label.columns]
    raw = read_table(layout, settings, label.paths, None, cols)
    clean, quarantine, r = validate_labels(raw, spec, known)
    layout.clean.mkdir(parents=True, exist_ok=True)
    clean.to_parquet(layout.labels, index=False)
    _write_quarantine(layout, LABEL_TABLE, quarantine)
    report[LABEL_TABLE] = r
    log.info(
        "%s/labels: %s rows ok (%s labeled), %s quarantined %s",
        spec.name,
        r["rows_ok"],
        r["labeled"],
        r["quarantined"],
        r["by_reason"],
    )
    metrics = {
        "rows_in": sum(t["rows_in"] for t in report.values()),
        "quarantined": sum(t["quarantined"] for t in report.values()),
        "tables": report,
    }
    write_metrics(layout.ingest_metrics, metrics)
    return metrics


def quarantine_files(layout: Layout) -> list[Path]:
    return sorted(layout.quarantine.glob("*.csv"))
