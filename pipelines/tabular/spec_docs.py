"""docs/specs.md, the reference of every spec key, written from core/spec.py's pydantic models (their
field types, defaults and descriptions are the one place these facts live).

    python -m pipelines.tabular.spec_docs      # rewrite docs/specs.md

tests/unit/test_spec.py fails when the committed file is out of date.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path

from pydantic import BaseModel

from core import spec as S
from core.settings import ROOT

OUT = ROOT / "docs" / "specs.md"
SECTIONS: list[tuple[str, type[BaseModel], str]] = [
    ("the spec (top level)", S.Spec, ""),
    (
        "`entity`",
        S.EntitySpec,
        "The business concept the model scores; one entity per concept across all specs.",
    ),
    (
        "`sources[]`",
        S.SourceSpec,
        "Each becomes a Feast FeatureView `<model>__<source>` over the ingested table.",
    ),
    (
        "a column (`sources[].columns.<name>`, `label.request_features.<name>`, `label.columns.<name>`)",
        S.ColumnSpec,
        "Validated on ingest; a row failing a rule goes to the quarantine with the reason code in brackets: "
        "`missing_<col>`, `not_int_<col>` / `not_float_<col>` / `not_bool_<col>`, `below_min_<col>`, "
        "`above_max_<col>`, `unknown_<col>`.",
    ),
    (
        "`sources[].checks[]`",
        S.CheckSpec,
        "A rule across a row's columns, e.g. `answered + rejected + missed == calls`; a row that breaks it "
        "is quarantined with `code` and the sentence followed by the values it read. A row missing one of "
        "the rule's values is not judged (its emptiness is the column's own check).",
    ),
    (
        "`sources[].history`",
        S.HistorySpec,
        "Running per-entity totals, computed by ingest on the clean rows in time order: each row's totals "
        "include itself and everything before it, so through the point-in-time join a prediction sees the "
        "entity's whole history strictly before its time. The history features are model inputs like the "
        "declared columns (int totals of int columns, float of float).",
    ),
    ("`label`", S.LabelSpec, "The label table: one row per prediction (entity, prediction time, label)."),
    ("`split`", S.SplitSpec, ""),
    ("`model`", S.ModelSection, ""),
    ("`model.tune`", S.TuneSpec, ""),
    ("`model.segments[]`", S.SegmentSpec, "A prediction belongs to the last segment whose `min` it reaches."),
    (
        "`model.rule_baseline`",
        S.RuleSpec,
        "The rule in use before the model, scored on the same test rows: metrics `rule_<metric>` beside "
        "the linear baseline's and the oracle's.",
    ),
    ("`outputs`", S.OutputsSpec, ""),
    ("`outputs.holdout`, `outputs.scoring`", S.OutputSpec, ""),
    ("`oracle`", S.OracleSpec, ""),
    (
        "`kpi`",
        S.KpiSpec,
        "The business view of a binary model on the dashboard (`/dashboard/<model>`), per week of prediction "
        "time on the hold-out rows: rows flagged (decision 1), flagged rows confirmed by the outcome, and "
        "optionally the share of a numeric feature's total (e.g. the balance in arrears) they cover.",
    ),
    (
        "`demo_data`",
        S.DemoDataSpec,
        "The generator's `generate(out, **params)` runs as the `<model>_generate` stage.",
    ),
]


def _type(t: object) -> str:
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in args if a is not type(None)) + (
            " or null" if type(None) in args else ""
        )
    if origin in (list, tuple):
        return f"list of {_type(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {_type(args[1])}"
    if isinstance(t, type) and issubclass(t, BaseModel):
        return "mapping"
    return getattr(t, "__name__", str(t)).replace("datetime", "ISO-8601 time")


def _default(field) -> str:
    if field.is_required():
        return "**required**"
    d = field.get_default(call_default_factory=True)
    if isinstance(d, BaseModel):
        return "(see below)"
    return "null" if d is None else '""' if d == "" else f"`{d}`"


def render() -> str:
    lines = [
        "# Model specs: the reference",
        "",
        "A model is one YAML file, `specs/<model>.yaml`. `make repro` (re)writes `specs/dvc.yaml` from the specs",
        "and runs the generic stages of each: ingest, training_set, train, evaluate, score, report (and generate,",
        "with `demo_data`). An error names the file, the line and the key:",
        "`specs/churn.yaml:12: sources[0].columns.age.minn: unknown key (a typo?)`.",
        'Worked example: `specs/churn.yaml` over `examples/churn/*.csv` (README, "Your own model in one file");',
        "a fuller one: `specs/payment_option.yaml`.",
        "",
        "Paths are relative to the project root. Times without a zone are UTC.",
        "",
        "Generated by `python -m pipelines.tabular.spec_docs` from `core/spec.py`; do not edit by hand.",
        "",
    ]
    for title, model, intro in SECTIONS:
        lines += [f"## {title}", ""]
        if intro:
            lines += [intro, ""]
        lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for name, field in model.model_fields.items():
            desc = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{name}` | {_type(field.annotation)} | {_default(field)} | {desc} |")
        lines.append("")
    lines += [
        "## Derived names",
        "",
        "| what | name |",
        "| --- | --- |",
        "| FeatureService | `<name>_v<version>` |",
        "| FeatureView of a source | `<name>__<source>` |",
        "| feature tables | `data/features/<name>/<source>.parquet` |",
        "| clean labels, quarantine | `data/clean/<name>/labels.parquet`, `data/quarantine/<name>/<table>.csv` |",
        "| training set | `data/training/<name>.parquet` (column `split`: train / test / score) |",
        "| model | `models/<name>/` |",
        "| metrics | `metrics/<name>.json`, `metrics/<name>_ingest.json` |",
        "| report | `docs/reports/<name>.md` |",
        "| default outputs | `data/outputs/<name>/holdout_predictions.csv`, `data/outputs/<name>/scoring.csv` |",
        "",
    ]
    return "\n".join(lines)


def write(path: Path = OUT) -> Path:
    path.write_text(render())
    return path


if __name__ == "__main__":
    print(write())
