"""Row-level validation with a quarantine: every rejected row is kept, with a reason code and a message.

Usage: read a raw file with every column as text (`read_raw`), create a `RowValidator`, call its checks,
then `split()` into clean rows and quarantined rows. A row may fail several checks; all reasons are kept.
Codes are stable identifiers (counted in the stage's metrics); messages say what was wrong, in words.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

REASON = "reason"
REASON_CODE = "reason_code"
SOURCE_ROW = "source_row"


def read_raw(path: Path | str, columns: list[str]) -> pd.DataFrame:
    """Read CSV or Parquet as text columns, keeping the original row number. Missing columns fail loudly."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        df = pd.read_parquet(path)
    elif path.suffix.lower() in {".csv", ".gz", ".txt"}:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    else:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r} (expected .csv or .parquet)")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing required column(s) {missing}; found {list(df.columns)}")
    df = df[columns].copy()
    df.insert(0, SOURCE_ROW, np.arange(len(df)) + (2 if path.suffix.lower() != ".parquet" else 0))
    return df


class RowValidator:
    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df
        self._codes: list[tuple[pd.Series, str, pd.Series]] = []
        self.repairs: Counter[str] = Counter()

    def reject(self, mask: pd.Series, code: str, message: str | Callable[[pd.DataFrame], pd.Series]) -> None:
        """Reject rows where `mask`; `message` is text, or a function of the rejected rows (built lazily)."""
        mask = mask.fillna(False).astype(bool)
        if not mask.any():
            return
        rows = self.df[mask]
        msg = pd.Series(message, index=rows.index) if isinstance(message, str) else message(rows)
        self._codes.append((mask, code, msg.astype(str)))

    def repaired(self, mask: pd.Series, code: str) -> None:
        self.repairs[code] += int(mask.sum())

    def rejected(self) -> pd.Series:
        """Rows rejected by the checks so far (e.g. to look for duplicates among the valid rows only)."""
        bad = pd.Series(False, index=self.df.index)
        for mask, _, _ in self._codes:
            bad |= mask
        return bad

    # --- typed parsing, each rejecting what does not parse ---
    def text(self, col: str) -> pd.Series:
        return self.df[col].astype("string").str.strip()

    def required(self, col: str, missing_code: str | None = None) -> pd.Series:
        """Free text that must not be empty (e.g. an external id); stripped, <NA> where missing."""
        text = self.text(col)
        empty = text.isna() | (text == "")
        self.reject(empty, missing_code or f"missing_{col}", f"{col} is missing")
        return text.mask(empty)

    def integer(
        self,
        col: str,
        code: str,
        *,
        required: bool = True,
        min_value: int | None = None,
        negative_code: str | None = None,
        max_value: int | None = None,
        above_code: str | None = None,
    ) -> pd.Series:
        """A whole number. Values beyond the int64 range are rejected (with `above_code` if given, else
        `code`), as are values above `max_value` when given; neither is returned."""
        raw = self.df[col]
        if pd.api.types.is_integer_dtype(raw):  # typed input (Parquet): no text round trip
            num = raw.astype("Int64")
            empty = num.isna()
            whole = ~empty
        else:
            text = raw.astype("string").str.strip()
            empty = text.isna() | (text == "")
            num = pd.to_numeric(text.where(~empty), errors="coerce")
            whole = num.notna() & np.isfinite(num) & (num == np.floor(num))
            self.reject(
                ~empty & ~whole, code, lambda r: f"{col} is not a whole number: '" + r[col].astype(str) + "'"
            )
            huge = whole & (num.abs() >= 2.0**63)  # would wrap around in int64
            self.reject(
                huge,
                above_code or code,
                lambda r: f"{col} is out of the integer range: " + r[col].astype(str),
            )
            whole &= ~huge
        if required:
            self.reject(empty, f"missing_{col}", f"{col} is missing")
        if min_value is not None:
            self.reject(
                whole & (num < min_value),
                negative_code or code,
                lambda r: f"{col} is below {min_value}: " + r[col].astype(str),
            )
        if max_value is not None:
            above = whole & (num > max_value)
            self.reject(
                above, above_code or code, lambda r: f"{col} is above {max_value:,}: " + r[col].astype(str)
            )
            whole &= ~above
        return num.where(whole).astype("Int64")

    def number(
        self,
        col: str,
        code: str,
        *,
        min_value: float | None = None,
        below_code: str | None = None,
        missing_code: str | None = None,
    ) -> pd.Series:
        """A real number; empty is allowed (NaN) unless `missing_code` is given."""
        raw = self.text(col)
        empty = raw.isna() | (raw == "")
        if missing_code is not None:
            self.reject(empty, missing_code, f"{col} is missing")
        num = pd.to_numeric(raw.where(~empty), errors="coerce")
        self.reject(
            ~empty & (num.isna() | ~np.isfinite(num)),
            code,
            lambda r: f"{col} is not a number: '" + r[col].astype(str) + "'",
        )
        if min_value is not None:
            self.reject(
                num < min_value,
                below_code or code,
                lambda r: f"{col} is below {min_value}: " + r[col].astype(str),
            )
        return num.where(np.isfinite(num))

    def timestamp(self, col: str, code: str, *, missing_code: str | None = None) -> pd.Series:
        """UTC timestamps (naive ones are taken as UTC). Empty values get `missing_code` if given, else `code`."""
        raw = self.df[col]
        if pd.api.types.is_datetime64_any_dtype(raw):
            ts = pd.to_datetime(raw, utc=True)
            self.reject(ts.isna(), missing_code or code, f"{col} is missing")
            return ts
        text = raw.astype("string").str.strip()
        empty = text.isna() | (text == "")
        ts = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        if missing_code is not None:
            self.reject(empty, missing_code, f"{col} is missing")
        self.reject(
            ts.isna() & ~(empty if missing_code is not None else False),
            code,
            lambda r: f"{col} is not an ISO-8601 timestamp: '" + r[col].astype(str) + "'",
        )
        return ts

    def category(
        self,
        col: str,
        allowed: frozenset[str] | tuple[str, ...],
        code: str,
        *,
        upper: bool = False,
        missing_code: str | None = None,
        optional: bool = False,
        aliases: Mapping[str, str] | None = None,
    ) -> pd.Series:
        """A closed-set value, normalized (stripped; lower-case, or upper-case if `upper`) and the
        normalizations counted as repairs. Empty values: <NA> if `optional`, else rejected with
        `missing_code` if given, else with `code` like any unknown value. `aliases` maps other
        spellings (keys in the normalized form, e.g. ``"iphone os"``) to allowed values; those are
        counted as ``mapped_<col>`` repairs instead of ``normalized_<col>``.

        The work is done once per distinct value (factorize, normalize the few uniques, map back): a
        category column of millions of rows has only a handful of spellings."""
        codes, uniques = pd.factorize(self.df[col], use_na_sentinel=True)
        raw_u = pd.Series(np.asarray(uniques, dtype=object), dtype="string")
        norm_u = raw_u.str.strip()
        norm_u = norm_u.str.upper() if upper else norm_u.str.lower()
        mapped_u = pd.Series(False, index=norm_u.index)
        if aliases:
            alias_u = norm_u.map(dict(aliases)).astype("string")
            mapped_u = alias_u.notna().astype(bool)
            norm_u = alias_u.fillna(norm_u)
        present = codes >= 0

        def rows(per_unique: pd.Series, fill: object) -> pd.Series:
            values = per_unique.to_numpy(dtype=object if fill is None else bool, na_value=fill)
            out = np.full(len(codes), fill, dtype=values.dtype)
            out[present] = values[codes[present]]
            return pd.Series(out, index=self.df.index)

        changed = (norm_u.notna() & (norm_u != raw_u)).fillna(False).astype(bool)
        self.repaired(rows(changed & ~mapped_u, False), f"normalized_{col}")
        if aliases:
            self.repaired(rows(mapped_u, False), f"mapped_{col}")
        empty = rows(norm_u.isna() | (norm_u == ""), True)
        known = rows(norm_u.isin(allowed), False)
        norm = rows(norm_u, None).astype("string")
        if optional or missing_code is not None:
            if missing_code is not None and not optional:
                self.reject(empty, missing_code, f"{col} is missing")
            norm = norm.mask(empty)
            bad = ~empty & ~known
        else:
            bad = ~known
        expected = ", ".join(sorted(allowed)) if len(allowed) <= 10 else f"one of {len(allowed)} known codes"
        self.reject(bad, code, lambda r: f"unknown {col} '" + r[col].astype(str) + f"' (expected {expected})")
        return norm

    def open_category(self, col: str, fill: str = "unknown") -> pd.Series:
        norm = self.text(col)
        empty = norm.isna() | (norm == "")
        self.repaired(empty, f"filled_{col}")
        return norm.mask(empty, fill)

    def duplicates(
        self,
        key: list[str],
        parsed_ok: pd.Series,
        *,
        keep_first_conflicting: bool = False,
        conflicting_code: str = "conflicting_duplicate",
        values: pd.DataFrame | None = None,
    ) -> None:
        """Exact duplicates: keep the first, quarantine the rest. Conflicting duplicates (same key, other
        values): quarantine all of them, or with `keep_first_conflicting` keep the first row of the key
        and quarantine the later ones (for ids that must be unique, e.g. transaction ids).

        Rows are compared on their raw text, or on `values` when given (the parsed, normalized columns,
        same index as the raw frame, holding the `key` columns): then ``' us'`` and ``'US'`` are the
        same key, and rows that differ only in formatting are exact duplicates."""
        frame = self.df if values is None else values
        cols = [c for c in frame.columns if c != SOURCE_ROW]
        cand = frame[parsed_ok]
        dup_key = cand.duplicated(key, keep=False)
        if not dup_key.any():
            return
        cand = cand[dup_key]  # exact duplicates share the key: look only among these rows
        exact_later = cand.duplicated(cols, keep="first")
        group_variants = (
            cand.groupby(key, dropna=False)[cols].transform(lambda s: s.nunique(dropna=False)).max(axis=1)
        )
        conflicting = pd.Series(False, index=self.df.index)
        conflicting.loc[group_variants.index] = group_variants > 1
        name = "/".join(key)

        def keys(r: pd.DataFrame) -> pd.Series:
            return frame.loc[r.index, key].astype(str).agg("/".join, axis=1)

        if keep_first_conflicting:
            later = pd.Series(False, index=self.df.index)
            later.loc[cand.index] = cand.duplicated(key, keep="first")
            exact = pd.Series(False, index=self.df.index)
            exact.loc[exact_later.index] = exact_later
            self.reject(
                exact,
                "exact_duplicate",
                lambda r: f"exact duplicate of an earlier row with {name} " + keys(r),
            )
            self.reject(
                later & ~exact,
                conflicting_code,
                lambda r: (
                    f"{name} " + keys(r) + " was already used by an earlier row (kept) with other values"
                ),
            )
            return
        exact = pd.Series(False, index=self.df.index)
        exact.loc[exact_later.index] = exact_later & ~conflicting.loc[exact_later.index]
        self.reject(
            exact, "exact_duplicate", lambda r: f"exact duplicate of an earlier row with {name} " + keys(r)
        )
        self.reject(
            conflicting,
            conflicting_code,
            lambda r: f"{name} " + keys(r) + " appears in several rows that disagree",
        )

    def report(self, ok: pd.Series, quarantine: pd.DataFrame, reasons: dict[str, int]) -> dict:
        """The counts every ingest writes to its metrics for a table (from `split()`'s result)."""
        return {
            "rows_in": len(self.df),
            "rows_ok": int(ok.sum()),
            "quarantined": len(quarantine),
            "by_reason": reasons,
            "repaired": dict(sorted(self.repairs.items())),
        }

    def split(self) -> tuple[pd.Series, pd.DataFrame, dict[str, int]]:
        """(mask of clean rows, quarantine frame with reasons, counts by reason code)."""
        bad = pd.Series(False, index=self.df.index)
        codes = pd.Series("", index=self.df.index, dtype=object)
        msgs = pd.Series("", index=self.df.index, dtype=object)
        counts: dict[str, int] = {}
        for mask, code, msg in self._codes:
            counts[code] = counts.get(code, 0) + int(mask.sum())
            sep = np.where(bad[mask], "; ", "")
            codes[mask] = codes[mask] + sep + code
            msgs[mask] = msgs[mask] + sep + msg.reindex(mask[mask].index)
            bad |= mask
        q = self.df[bad].copy()
        q.insert(1, REASON_CODE, codes[bad])
        q.insert(2, REASON, msgs[bad])
        return ~bad, q, dict(sorted(counts.items()))
