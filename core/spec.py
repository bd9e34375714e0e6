"""A model is a spec: one YAML file (``specs/<model>.yaml``) declares the entity, the sources and their
columns, the label, the split, the model and the outputs; the generic stages (pipelines/tabular), the
feature repo (feature_repo/spec_models.py) and serving read only this.

Loading validates the file with pydantic (unknown keys, wrong types and inconsistent references fail) and
names the offending key *and its line*: ``specs/x.yaml:14: sources[0].columns.age.min: ...``.
The reference of every key is docs/specs.md; pydantic's field descriptions below are that reference's
source.

A leaf module: it imports nothing of the project but settings, so feature_repo and serving may import it.
"""

from __future__ import annotations

import ast
import re
import string
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME = r"^[a-z][a-z0-9_]*$"
ColumnType = Literal["int", "float", "string", "bool"]
# Feast dtype of each column type (a bool feature is served as 0/1, like CatBoost sees it)
FEAST_DTYPES = {"int": "Int64", "float": "Float64", "string": "String", "bool": "Int64"}
SPEC_SUFFIX = ".yaml"
# Column names the stages use themselves (ingest, training set, quarantine files): no declared column may take one.
RESERVED = {
    "prediction_time",
    "event_timestamp",
    "split",
    "_row",
    "source_row",
    "source_file",
    "reason",
    "reason_code",
}
# Regression losses whose served value is one number on the label's scale (Poisson/Tweedie through exp).
REGRESSION_LOSSES = {
    "RMSE",
    "MAE",
    "Quantile",
    "Expectile",
    "Huber",
    "LogCosh",
    "Lq",
    "MAPE",
    "Poisson",
    "Tweedie",
}
NOT_SPECS = {"dvc.yaml"}  # specs/dvc.yaml is derived from the specs (pipelines/tabular/dvcgen.py)


class SpecError(ValueError):
    """A spec that cannot be used; the message names the file, the line and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _is_number(v: object) -> bool:
    try:
        float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return not isinstance(v, bool)


class ColumnSpec(_Strict):
    type: ColumnType = Field(description="int, float, string or bool")
    categorical: bool | None = Field(
        default=None, description="a category for the model; default: true for string, false otherwise"
    )
    values: list[str | int] | None = Field(
        default=None, description="the allowed values (a closed set); others are quarantined"
    )
    min: float | None = Field(default=None, description="smallest allowed value (numbers)")
    max: float | None = Field(default=None, description="largest allowed value (numbers)")
    nullable: bool = Field(default=False, description="may the value be empty? else the row is quarantined")
    feature: bool = Field(default=True, description="a model input (false: kept and validated, not learned)")
    description: str = Field(default="", description="shown in the Feast registry")
    monotone: Literal[-1, 0, 1] = Field(
        default=0,
        description="+1: more of it never lowers the prediction (a CatBoost constraint); -1: never raises",
    )
    reason: str | None = Field(
        default=None,
        description="phrase quoted as a reason when the feature raises the prediction: '{value}'",
    )
    since: int = Field(
        default=1,
        ge=1,
        description="the model version that first uses this feature: the FeatureServices of earlier versions "
        "leave it out (the column is ingested and validated whatever the version)",
    )

    @property
    def is_categorical(self) -> bool:
        return self.type == "string" if self.categorical is None else self.categorical

    @property
    def feast_dtype(self) -> str:
        return "String" if self.is_categorical else FEAST_DTYPES[self.type]

    @model_validator(mode="after")
    def _consistent(self) -> ColumnSpec:
        if self.categorical and self.type == "float":
            raise ValueError("a float column cannot be categorical; declare it as int or string")
        if self.categorical is False and self.type == "string":
            raise ValueError("a string column is always categorical")
        if (self.min is not None or self.max is not None) and self.type not in {"int", "float"}:
            raise ValueError("min/max apply to int and float columns only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.monotone and self.is_categorical:
            raise ValueError("monotone applies to numeric features only")
        if self.values is not None and self.type == "bool":
            raise ValueError("a bool column takes true/false; `values` does not apply")
        if self.values is not None and self.type in {"int", "float"}:
            bad = [
                v
                for v in self.values
                if not _is_number(v) or (self.type == "int" and float(v) != int(float(v)))
            ]
            if bad:
                raise ValueError(f"values {bad} are not {'whole ' if self.type == 'int' else ''}numbers")
        if self.reason is not None:
            try:
                fields = {f for _, f, _, _ in string.Formatter().parse(self.reason) if f is not None}
            except ValueError as e:
                raise ValueError(f"reason {self.reason!r} is not a valid template: {e}") from None
            if fields - {"value"}:
                raise ValueError(
                    f"reason {self.reason!r} may only use {{value}}, not {sorted(fields - {'value'})}"
                )
        return self


class EntitySpec(_Strict):
    name: str = Field(pattern=NAME, description="the business concept, e.g. obligation; one per concept")
    join_key: str = Field(pattern=NAME, description="the id column in every source, e.g. obligation_id")
    key_type: Literal["int", "str"] = Field(default="int", description="int (64-bit) or str ids")
    description: str = Field(default="", description="shown in the Feast registry")


_CHECK_NODES = (
    "Expression BoolOp And Or UnaryOp Not USub UAdd BinOp Add Sub Mult Div FloorDiv Mod Compare Eq NotEq Lt "
    "LtE Gt GtE Name Load Constant"
).split()


class CheckSpec(_Strict):
    rule: str = Field(
        description="a condition every row must meet, over the table's declared columns: arithmetic "
        "(+ - * / // %), comparisons, and/or/not, numbers; e.g. `answered + rejected + missed == calls`"
    )
    code: str = Field(pattern=NAME, description="the quarantine reason code of a row that breaks it")
    reason: str | None = Field(
        default=None, description="the sentence quarantined rows carry (default: `breaks <rule>`)"
    )

    @field_validator("rule")
    @classmethod
    def _safe(cls, v: str) -> str:
        return safe_expression(v, "rule")

    @property
    def columns(self) -> list[str]:
        return expression_names(self.rule)


def safe_expression(v: str, what: str) -> str:
    """Only arithmetic and comparisons of column names and numbers: the expression is evaluated by pandas,
    so nothing else (calls, attributes, indexing) may get in."""
    try:
        tree = ast.parse(v, mode="eval")
    except SyntaxError as e:
        raise ValueError(f"{what} {v!r} is not an expression: {e.msg}") from None
    bad = sorted({type(n).__name__ for n in ast.walk(tree)} - set(_CHECK_NODES))
    texts = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    if texts:
        bad.append(f"text {texts}")
    if bad:
        raise ValueError(
            f"{what} {v!r} uses {bad}; a {what} may use column names, numbers, + - * / // %, comparisons "
            "and and/or/not only"
        )
    return v


def expression_names(v: str) -> list[str]:
    return sorted({n.id for n in ast.walk(ast.parse(v, mode="eval")) if isinstance(n, ast.Name)})


class RuleSpec(_Strict):
    score: str = Field(
        description="an expression over the model's features that ranks like the rule in use today, e.g. "
        "`rejected_call_count / (call_count + 1)`; evaluated beside the model (binary: flags at its best-F1 "
        "threshold on the train rows)"
    )
    description: str = Field(default="", description="what the rule is, for the report")

    @field_validator("score")
    @classmethod
    def _safe(cls, v: str) -> str:
        return safe_expression(v, "score")


class HistorySpec(_Strict):
    sum: list[str] = Field(
        default_factory=list,
        description="numeric columns whose running total per entity, over its clean rows up to and including "
        "each row, becomes the feature `<column>_total` (empty values add nothing; a nullable column also "
        "gets `<column>_rows`, the rows where it had a value, so 'never reported' differs from 'reported 0')",
    )
    rows: str | None = Field(
        default=None, pattern=NAME, description="a feature counting the entity's clean rows so far"
    )
    share_of: str | None = Field(
        default=None,
        description="one of the summed columns: every other summed column also gets `<column>_share`, its "
        "total over this one's (empty while this total is 0), and with `rows` this one gets `<column>_per_row`; "
        "rates a tree model cannot form from the totals by itself",
    )


class SourceSpec(_Strict):
    name: str = Field(pattern=NAME, description="becomes the feature view <model>__<name>")
    path: str | list[str] | None = Field(
        default=None, description="CSV or Parquet file(s), relative to the project root"
    )
    table: str | None = Field(
        default=None, description="a PostgreSQL table (schema.table) read when DATABASE_URL is set"
    )
    timestamp: str | None = Field(
        default=None, description="event-timestamp column: a row is known from this time on"
    )
    as_of: datetime | None = Field(
        default=None, description="for a static table without a timestamp column: when it was true"
    )
    ttl_days: float = Field(
        default=0,
        ge=0,
        description="a training row ignores values older than this before its prediction time; 0 = forever "
        "(the online store serves the latest row)",
    )
    columns: dict[str, ColumnSpec] = Field(min_length=1, description="column name -> its declaration")
    checks: list[CheckSpec] = Field(
        default_factory=list,
        description="rules across columns a row must meet (below); a row that breaks one is quarantined",
    )
    history: HistorySpec | None = Field(
        default=None,
        description="running per-entity totals computed by ingest after validation (below): the history "
        "a model needs from an event-grain table, as-of each row",
    )

    @model_validator(mode="after")
    def _one_time(self) -> SourceSpec:
        if (self.timestamp is None) == (self.as_of is None):
            raise ValueError("give exactly one of `timestamp` (a column) or `as_of` (a fixed time)")
        if self.path is None and self.table is None:
            raise ValueError("give `path` (CSV/Parquet) or `table` (PostgreSQL)")
        for c in self.columns:
            if not re.match(NAME, c):
                raise ValueError(f"column name {c!r} must match {NAME} (lower-case, digits, _)")
        return self

    @property
    def paths(self) -> list[str]:
        return [] if self.path is None else [self.path] if isinstance(self.path, str) else list(self.path)

    @property
    def derived_columns(self) -> dict[str, ColumnSpec]:
        """The history features ingest adds to this source's table (`history`), declared like columns."""
        h = self.history
        if h is None:
            return {}
        out: dict[str, ColumnSpec] = {}
        for c in h.sum:
            base = self.columns[c]
            out[f"{c}_total"] = ColumnSpec(
                type="float" if base.type == "float" else "int",
                description=f"running total of {c} over the entity's rows so far",
                since=base.since,
            )
            if base.nullable:
                out[f"{c}_rows"] = ColumnSpec(
                    type="int",
                    description=f"the entity's rows so far where {c} had a value",
                    since=base.since,
                )
        if h.rows:
            out[h.rows] = ColumnSpec(type="int", description="the entity's rows so far")
        if h.share_of:
            b = self.columns[h.share_of]
            for c in h.sum:
                if c != h.share_of:
                    out[f"{c}_share"] = ColumnSpec(
                        type="float",
                        description=f"{c}_total / {h.share_of}_total",
                        since=max(self.columns[c].since, b.since),
                    )
            if h.rows:
                out[f"{h.share_of}_per_row"] = ColumnSpec(
                    type="float", description=f"{h.share_of}_total / {h.rows}", since=b.since
                )
        return out

    @property
    def feature_columns(self) -> list[tuple[str, ColumnSpec]]:
        """What the source's feature view holds: its feature columns, then its history features."""
        return [(c, col) for c, col in self.columns.items() if col.feature] + list(
            self.derived_columns.items()
        )


class LabelSpec(_Strict):
    path: str | list[str] = Field(
        description="the label table: CSV or Parquet file(s), one row per prediction"
    )
    column: str = Field(description="the label column; empty = not known yet (scored, not trained on)")
    task: Literal["binary", "multiclass", "regression"] = Field(description="what the label is")
    positive: str | int | None = Field(
        default=None, description="binary: the value meaning 'yes' (default 1)"
    )
    negative: str | int | None = Field(default=None, description="binary: the value meaning 'no' (default 0)")
    classes: list[str] | None = Field(default=None, description="multiclass: the class values, in order")
    prediction_time: str = Field(
        description="column: when the prediction is made; features strictly before it are used"
    )
    data_end: datetime | None = Field(
        default=None,
        description="the export's 'now': labels are final when prediction_time + horizon_days is not after it "
        "(default: the latest prediction_time)",
    )
    horizon_days: float = Field(
        default=0,
        ge=0,
        description="the label is final this long after prediction_time; younger rows are not trained on",
    )
    request_features: dict[str, ColumnSpec] = Field(
        default_factory=dict,
        description="label-table columns sent by the client at request time (model inputs)",
    )
    columns: dict[str, ColumnSpec] = Field(
        default_factory=dict, description="other label-table columns to keep (e.g. a group for the split)"
    )

    @property
    def paths(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path)

    @model_validator(mode="after")
    def _task(self) -> LabelSpec:
        if self.task == "multiclass" and (not self.classes or len(self.classes) < 3):
            raise ValueError("task multiclass needs `classes` with at least 3 values (2 is binary)")
        if self.task != "multiclass" and self.classes is not None:
            raise ValueError(f"`classes` is for task multiclass, not {self.task}")
        if self.task != "binary" and (self.positive is not None or self.negative is not None):
            raise ValueError(f"`positive`/`negative` are for task binary, not {self.task}")
        if self.task == "binary" and self.binary_values[0] == self.binary_values[1]:
            raise ValueError(f"`positive` and `negative` are both {self.binary_values[0]!r}")
        return self

    @property
    def binary_values(self) -> tuple[str, str]:
        """(positive, negative) as text, the way they appear in a CSV."""
        return (
            str(1 if self.positive is None else self.positive),
            str(0 if self.negative is None else self.negative),
        )


class SplitSpec(_Strict):
    kind: Literal["random", "time", "group"] = Field(
        default="random", description="random (stratified for classification), time (latest rows), group"
    )
    test_fraction: float = Field(default=0.2, gt=0, lt=1, description="share of the labeled rows held out")
    group_column: str | None = Field(default=None, description="kind group: rows sharing it stay together")
    seed: int = Field(default=7, description="seed of the random and group splits")

    @model_validator(mode="after")
    def _group(self) -> SplitSpec:
        if (self.kind == "group") != (self.group_column is not None):
            raise ValueError("`group_column` is needed by kind group, and only by it")
        return self


class TuneSpec(_Strict):
    n_trials: int = Field(default=0, ge=0, description="Optuna trials; 0 = train with `params` as given")
    folds: int = Field(default=3, ge=2, description="cross-validation folds per trial")
    timeout_s: float | None = Field(default=None, gt=0, description="stop the search after this long")


class SegmentSpec(_Strict):
    name: str = Field(description="e.g. High")
    min: float = Field(description="lowest prediction in the segment")


class ModelSection(_Strict):
    params: dict[str, Any] = Field(
        default_factory=dict, description="CatBoost parameters (iterations, depth, learning_rate, ...)"
    )
    tune: TuneSpec = Field(default=TuneSpec(), description="an Optuna search (below); off by default")
    validation_fraction: float = Field(
        default=0.15, gt=0, lt=0.5, description="of the training rows: early stopping and calibration"
    )
    calibration: Literal["none", "platt"] = Field(default="none", description="binary: Platt scaling")
    threshold: Annotated[float, Field(gt=0, lt=1)] | Literal["f1"] = Field(
        default="f1", description="binary operating threshold: a probability, or f1 (best F1 on validation)"
    )
    segments: list[SegmentSpec] = Field(default_factory=list, description="named score bands by lower bound")
    max_reasons: int = Field(
        default=3, ge=0, description="reasons quoted per prediction (features with a `reason`)"
    )
    reason_min_contribution: float = Field(
        default=0.05,
        ge=0,
        description="a feature is quoted as a reason only if it raises the raw score by at least this much "
        "(log-odds for binary models)",
    )
    rule_baseline: RuleSpec | None = Field(
        default=None, description="the business rule the model must beat (below); binary and regression"
    )
    seed: int = Field(default=42, description="CatBoost's and the validation split's seed")
    thread_count: int = Field(default=2, description="CatBoost threads")

    @field_validator("params")
    @classmethod
    def _no_managed(cls, v: dict[str, Any]) -> dict[str, Any]:
        managed = {"cat_features", "monotone_constraints", "random_seed", "thread_count", "class_names"}
        bad = sorted(set(v) & managed)
        if bad:
            raise ValueError(f"{bad} are set by the platform from the spec (columns, seed); remove them")
        return v


class OutputSpec(_Strict):
    path: str = Field(description="CSV file to write")
    columns: list[str] | None = Field(
        default=None, description="columns to write (default: keys, time, prediction[, actual])"
    )


class OutputsSpec(_Strict):
    holdout: OutputSpec | None = Field(default=None, description="test-split predictions with the actual")
    scoring: OutputSpec | None = Field(default=None, description="predictions for rows without a label")


class OracleSpec(_Strict):
    path: str = Field(description="file with the join key, the prediction time and the true expectation")
    column: str = Field(description="the column holding the true expectation (a probability or a mean)")


class DemoDataSpec(_Strict):
    generator: str = Field(description="module with generate(out, **params), e.g. synthetic.payment_option")
    out: str = Field(description="folder the generator writes (the sources' paths point into it)")
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of generate()")


class KpiSpec(_Strict):
    flagged: str = Field(description="what a positive decision is called, counted per week on the dashboard "
                         "(e.g. offers made)")  # fmt: skip
    confirmed: str = Field(description="a flagged row whose outcome is positive (e.g. accepted offers)")
    weight: str | None = Field(
        default=None,
        description="a numeric feature of the entity (e.g. balance): the dashboard adds the share of its weekly "
        "total over the scored entities that the confirmed rows cover",
    )
    weight_label: str = Field(default="share of the weight covered", description="the name of that share")


class Spec(_Strict):
    name: str = Field(pattern=NAME, description="the model's name: models/<name>/, metrics/<name>.json")
    version: int = Field(default=1, ge=1, description="FeatureService <name>_v<version>")
    description: str = Field(default="", description="one line: what the model predicts (reports, registry)")
    entity: EntitySpec = Field(description="who or what is scored (below)")
    sources: list[SourceSpec] = Field(min_length=1, description="the feature tables (below), at least one")
    label: LabelSpec = Field(description="the label table (below)")
    split: SplitSpec = Field(default=SplitSpec(), description="how the test rows are chosen (below)")
    model: ModelSection = Field(default=ModelSection(), description="CatBoost and its options (below)")
    outputs: OutputsSpec = Field(default=OutputsSpec(), description="the batch files (below)")
    oracle: OracleSpec | None = Field(default=None, description="for evaluation only: the true expectation")
    kpi: KpiSpec | None = Field(
        default=None, description="binary models: the business KPI on the dashboard (below)"
    )
    demo_data: DemoDataSpec | None = Field(default=None, description="a built-in generator for the demo")

    @model_validator(mode="after")
    def _references(self) -> Spec:
        """Cross-field rules. Each error starts with ``at <key path>:`` so `parse_spec` can name its line."""
        lab, key = self.label, self.entity.join_key
        if self.kpi is not None:
            if lab.task != "binary":
                raise ValueError(
                    f"at kpi: a KPI counts flagged and confirmed rows of a binary model; task is {lab.task}"
                )
            w = self.kpi.weight
            numeric = {c for s in self.sources for c, cs in s.columns.items() if cs.type in ("int", "float")}
            if w is not None and w not in numeric:
                raise ValueError(
                    f"at kpi.weight: {w!r} is not a numeric column of the sources; known: {sorted(numeric)}"
                )
        names = [s.name for s in self.sources]
        for i, n in enumerate(names):
            if names.index(n) != i:
                raise ValueError(f"at sources[{i}].name: source names must be unique; {n!r} is repeated")
        feature_of: dict[str, str] = {}
        label_cols = {lab.column, lab.prediction_time, *lab.request_features, *lab.columns}
        for i, s in enumerate(self.sources):
            for c, col in s.columns.items():
                at = f"at sources[{i}].columns.{c}"
                if c in RESERVED:
                    raise ValueError(f"{at}: {c!r} is a name the platform uses itself; rename the column")
                if c in {key, s.timestamp}:
                    raise ValueError(
                        f"{at}: the join key and the timestamp are implicit, do not declare them"
                    )
                if col.feature and c in feature_of:
                    raise ValueError(f"{at}: feature {c!r} is also declared in source {feature_of[c]}")
                if col.feature and c in label_cols:
                    raise ValueError(f"{at}: feature {c!r} has the name of a label-table column")
                if col.feature:
                    feature_of[c] = s.name
                if col.since > self.version:
                    raise ValueError(
                        f"{at}.since: {col.since} is above the spec's version {self.version}; a feature joins "
                        "the model at a version up to the current one"
                    )
                if col.since > 1 and not col.feature:
                    raise ValueError(f"{at}.since: `since` is for features; this column has feature: false")
            for j, check in enumerate(s.checks):
                at = f"at sources[{i}].checks[{j}].rule"
                if not check.columns:
                    raise ValueError(f"{at}: {check.rule!r} names no column")
                unknown = [c for c in check.columns if c not in s.columns]
                if unknown:
                    raise ValueError(
                        f"{at}: {check.rule!r} names {unknown}, not declared columns of this source"
                    )
                strings = [c for c in check.columns if s.columns[c].type not in {"int", "float", "bool"}]
                if strings:
                    raise ValueError(f"{at}: {check.rule!r}: {strings} are not numeric columns")
            if s.history is not None:
                for c in s.history.sum:
                    hcol = s.columns.get(c)
                    if hcol is None or hcol.type not in {"int", "float", "bool"} or hcol.is_categorical:
                        raise ValueError(
                            f"at sources[{i}].history.sum: {c!r} is not a declared numeric column of this source"
                        )
                if s.history.share_of is not None and s.history.share_of not in s.history.sum:
                    raise ValueError(
                        f"at sources[{i}].history.share_of: {s.history.share_of!r} is not one of the summed columns"
                    )
                for c in s.derived_columns:
                    if c in s.columns or c in feature_of or c in label_cols or c in RESERVED or c == key:
                        raise ValueError(
                            f"at sources[{i}].history: the history feature {c!r} takes a name already in use"
                        )
                    feature_of[c] = s.name
        if lab.column in RESERVED:
            raise ValueError(f"at label.column: {lab.column!r} is a name the platform uses itself")
        if lab.prediction_time in RESERVED - {"prediction_time"}:
            raise ValueError(
                f"at label.prediction_time: {lab.prediction_time!r} is a name the platform uses itself"
            )
        if lab.column in {key, lab.prediction_time}:
            raise ValueError("at label.column: the label cannot be the join key or the prediction time")
        for part, cols in (("request_features", lab.request_features), ("columns", lab.columns)):
            for c, col in cols.items():
                at = f"at label.{part}.{c}"
                if c in RESERVED:
                    raise ValueError(f"{at}: {c!r} is a name the platform uses itself; rename the column")
                if c in {key, lab.prediction_time, lab.column}:
                    raise ValueError(f"{at}: the key, the prediction time and the label are implicit")
                if col.since > self.version:
                    raise ValueError(f"{at}.since: {col.since} is above the spec's version {self.version}")
                if part == "request_features" and not col.feature:
                    raise ValueError(
                        f"{at}: a request feature is a model input; `feature: false` makes no sense"
                    )
        both = sorted(set(lab.request_features) & set(lab.columns))
        if both:
            raise ValueError(f"at label.columns: {both} are already request features")
        g = self.split.group_column
        if g and g not in lab.columns and g != key:
            raise ValueError(
                f"at split.group_column: {g!r} must be the join key or declared under label.columns"
            )
        if not self.features:
            raise ValueError("at sources: the spec declares no feature (every column has feature: false)")
        for c, col in self.features:
            where = f"label.request_features.{c}" if c in lab.request_features else self._column_path(c)
            if lab.task == "multiclass" and (col.monotone or col.reason):
                raise ValueError(
                    f"at {where}: monotone constraints and reason phrases are for binary and regression "
                    "models (CatBoost has no monotone multiclass; reasons explain one score)"
                )
        task = lab.task
        loss = self.model.params.get("loss_function")
        if loss is not None and task != "regression":
            raise ValueError(
                "at model.params.loss_function: binary and multiclass losses follow the task (Logloss, "
                "MultiClass); only a regression may choose its loss (RMSE, Poisson, Tweedie:variance_power=1.5, ...)"
            )
        if loss is not None and str(loss).split(":")[0] not in REGRESSION_LOSSES:
            raise ValueError(
                f"at model.params.loss_function: {loss!r} is not served; use one of {sorted(REGRESSION_LOSSES)}"
            )
        if task != "binary" and self.model.calibration != "none":
            raise ValueError("at model.calibration: calibration is for binary models")
        if task != "binary" and "threshold" in self.model.model_fields_set:
            raise ValueError("at model.threshold: an operating threshold is for binary models")
        rule = self.model.rule_baseline
        if rule is not None:
            if task == "multiclass":
                raise ValueError(
                    "at model.rule_baseline: a rule baseline scores binary and regression models"
                )
            known = {c for c, _ in self.features}
            unknown = [c for c in expression_names(rule.score) if c not in known]
            if unknown:
                raise ValueError(f"at model.rule_baseline.score: {unknown} are not features of this version")
        self._check_outputs()
        return self

    def _column_path(self, column: str) -> str:
        for i, s in enumerate(self.sources):
            if column in s.columns:
                return f"sources[{i}].columns.{column}"
        return "sources"

    def output_columns(self, holdout: bool) -> list[str]:
        """The columns the score stage can write (outputs.*.columns picks among them)."""
        lab = self.label
        cols = [self.entity.join_key, lab.prediction_time, *lab.request_features]
        if lab.task == "multiclass":
            cols += ["predicted_class", "prediction", *[f"p_{c}" for c in lab.classes or []]]
        else:
            cols.append("prediction")
        if lab.task == "binary":
            cols.append("decision")
        if self.model.segments:
            cols.append("segment")
        return cols + (["actual"] if holdout else [])

    def _check_outputs(self) -> None:
        o = self.outputs
        if o.holdout and o.scoring and o.holdout.path == o.scoring.path:
            raise ValueError(
                "at outputs.scoring.path: the hold-out and the scoring file need different paths"
            )
        for which, out in (("holdout", o.holdout), ("scoring", o.scoring)):
            if out and out.columns:
                known = self.output_columns(holdout=which == "holdout")
                bad = [c for c in out.columns if c not in known]
                if bad:
                    raise ValueError(
                        f"at outputs.{which}.columns: {bad} are not produced; choose among {known}"
                    )

    # --- derived names: the one place each is spelled ---
    @property
    def feature_service(self) -> str:
        return f"{self.name}_v{self.version}"

    def at_version(self, version: int) -> Spec:
        """The spec as it was at an earlier `version`: the features whose `since` is later are left out
        (kept as validated non-feature columns, dropped from the history sums). Every earlier version keeps
        its FeatureService ``<name>_v<k>``, so a model trained on it is still served next to the new one."""
        if not 1 <= version <= self.version:
            raise ValueError(f"{self.name}: version {version} is not in 1..{self.version}")
        if version == self.version:
            return self
        d = self.model_dump(exclude_unset=True)
        d["version"] = version
        for src, s in zip(d["sources"], self.sources, strict=True):
            later = {c for c, col in s.columns.items() if col.since > version}
            for c in later:
                src["columns"][c].update(feature=False, since=1)
            if s.history is not None and later:
                src["history"]["sum"] = [c for c in s.history.sum if c not in later]
                if s.history.share_of in later:
                    src["history"].pop("share_of")
        lab = d["label"]
        for c, col in self.label.request_features.items():
            if col.since > version:
                lab["request_features"].pop(c)
        return Spec.model_validate(d)

    @property
    def versions(self) -> list[int]:
        """The versions with a FeatureService: 1 .. version (each differs by the features of its `since`)."""
        return list(range(1, self.version + 1))

    def view_name(self, source: SourceSpec) -> str:
        return f"{self.name}__{source.name}"

    @cached_property
    def features(self) -> list[tuple[str, ColumnSpec]]:
        """The model's inputs in order: each source's feature columns, then the request features."""
        out = [(c, col) for s in self.sources for c, col in s.feature_columns]
        return out + list(self.label.request_features.items())

    @property
    def request_feature_names(self) -> list[str]:
        return list(self.label.request_features)


# --- loading -------------------------------------------------------------------------------------------


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at pydantic's error location (the deepest one that exists)."""
    line = None if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == part), None)
            if nxt is None:  # an unknown key is reported at its own line
                key = next((k for k, _ in node.value if k.value == part), None)
                return key.start_mark.line + 1 if key is not None else line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith(("function-", "union[", "literal[")) and "[" not in str(part):
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def parse_spec(text: str, origin: str = "<spec>") -> Spec:
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"{origin}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: a spec is a YAML mapping (name:, entity:, sources:, label:, ...)")
    try:
        return Spec.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = tuple(err["loc"])
            line = _line_of(node, loc)
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (a typo?)"
            located = re.match(r"at ([\w.\[\]]+): (.*)", msg, re.S)
            if located:  # a cross-field rule names its key: loc = that key, relative to where it was raised
                loc = loc + tuple(int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", located[1]))
                line, msg = _line_of(node, loc), located[2]
            lines.append(f"{origin}:{line or '?'}: {_where(loc)}: {msg}")
        raise SpecError("\n".join(lines)) from None


def load_spec(path: Path | str) -> Spec:
    path = Path(path)
    if not path.exists():
        raise SpecError(f"{path}: no such spec file")
    return parse_spec(path.read_text(), origin=str(path))


def spec_paths(specs_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in Path(specs_dir).glob(f"*{SPEC_SUFFIX}")
        if not p.name.startswith(("_", ".")) and p.name not in NOT_SPECS
    )


def load_specs(specs_dir: Path) -> list[Spec]:
    """Every spec of a folder; two specs naming the same entity must declare it alike (one entity per
    business concept), and model names are unique."""
    specs = []
    for p in spec_paths(specs_dir):
        spec = load_spec(p)
        if spec.name != p.stem:
            raise SpecError(f"{p}:1: name: the file is named {p.stem!r} but declares name {spec.name!r}")
        specs.append(spec)
    entities: dict[str, tuple[str, EntitySpec]] = {}
    models: set[str] = set()
    for s in specs:
        if s.name in models:
            raise SpecError(f"{specs_dir}: two specs are named {s.name!r}")
        models.add(s.name)
        prev = entities.get(s.entity.name)
        if prev and (prev[1].join_key, prev[1].key_type) != (s.entity.join_key, s.entity.key_type):
            raise SpecError(
                f"entity {s.entity.name!r} is declared differently by specs {prev[0]} and {s.name}: "
                f"{prev[1].join_key}/{prev[1].key_type} vs {s.entity.join_key}/{s.entity.key_type}"
            )
        entities.setdefault(s.entity.name, (s.name, s.entity))
    return specs


def find_spec(specs_dir: Path, name: str) -> Spec:
    path = Path(specs_dir) / f"{name}{SPEC_SUFFIX}"
    if not path.exists():
        known = [p.stem for p in spec_paths(specs_dir)]
        raise SpecError(f"no spec {name!r} in {specs_dir}; known: {known}")
    spec = load_spec(path)
    if spec.name != name:
        raise SpecError(f"{path}: the file is named {name!r} but declares name: {spec.name!r}")
    return spec
