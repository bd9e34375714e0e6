"""Write ``docs/reports/<model>.md`` (and its plots under ``docs/reports/<model>/``) for a spec'd model,
from the stages' outputs only: the data and its quality, the label, exploration (the outcome by each
category), the model and why, the test metrics beside the baselines and the oracle, feature importance,
the output files, and how a web or mobile client gets the results. Every figure is read, none typed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from core.layout import Layout
from core.model_bundle import load_bundle
from core.settings import Settings
from pipelines.tabular.training_set import SPLIT

log = logging.getLogger(__name__)
MAX_CATEGORY_PLOTS = 6


def _md(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    return df.to_markdown(index=False, floatfmt=floatfmt)


def _rel(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def quality_section(layout: Layout, ingest: dict[str, Any]) -> str:
    rows, reasons = [], []
    for table, r in ingest["tables"].items():
        rows.append(
            {
                "table": table,
                "rows in": r["rows_in"],
                "clean": r["rows_ok"],
                "quarantined": r["quarantined"],
                "repaired": sum(r.get("repaired", {}).values()),
            }
        )
        q = layout.quarantine / f"{table}.csv"
        examples = (
            pd.read_csv(q, dtype=str, keep_default_na=False) if q.exists() and r["quarantined"] else None
        )
        for code, n in r["by_reason"].items():
            example = ""
            if examples is not None:
                hit = examples[examples["reason_code"].str.split("; ").apply(lambda cs, c=code: c in cs)]
                example = hit["reason"].iloc[0].split("; ")[0] if len(hit) else ""
            reasons.append({"table": table, "reason code": code, "rows": n, "example": example})
    text = [
        "## Data and its quality\n",
        f"Every row of every declared file is validated against the spec; {ingest['quarantined']:,} of "
        f"{ingest['rows_in']:,} rows were quarantined with their reason (`{_rel(layout.quarantine, layout.root)}/`), "
        "none dropped silently.\n",
        _md(pd.DataFrame(rows)),
        "",
    ]
    if reasons:
        text += ["Quarantined rows by reason:\n", _md(pd.DataFrame(reasons)), ""]
    return "\n".join(text)


def label_section(layout: Layout, df: pd.DataFrame) -> str:
    spec, lab = layout.spec, layout.spec.label
    counts = df[SPLIT].value_counts()
    known = df[df[SPLIT] != "score"]
    lines = [
        "## The label and the split\n",
        f"`{lab.column}` ({lab.task}), predicted at `{lab.prediction_time}` from features stamped strictly "
        f"before it; final {lab.horizon_days:g} days after. {len(known):,} rows have a final label, "
        f"{counts.get('score', 0):,} are to score.",
    ]
    if lab.task == "binary":
        lines.append(f"Positive rate: {known[lab.column].astype(float).mean():.3f}.")
    elif lab.task == "multiclass":
        dist = known[lab.column].value_counts(normalize=True).round(3).to_dict()
        lines.append(f"Class shares: {dist}.")
    s = spec.split
    how = {
        "random": "at random (stratified)",
        "time": "by time (the latest rows)",
        "group": f"by `{s.group_column}` (a group stays on one side)",
    }[s.kind]
    lines.append(
        f"Split {how}: {counts.get('train', 0):,} train, {counts.get('test', 0):,} test "
        f"({s.test_fraction:.0%}); the test rows are read only by evaluate and score.\n"
    )
    return lines[0] + "\n" + " ".join(lines[1:])


def exploration_section(layout: Layout, df: pd.DataFrame, out_dir: Path) -> str:
    from matplotlib.figure import (
        Figure,
    )  # no pyplot: no global backend or figure state (notebooks keep theirs)

    spec, lab = layout.spec, layout.spec.label
    known = df[df[SPLIT] != "score"]
    if lab.task == "multiclass":
        return ""
    y = known[lab.column].astype(float)
    cats = [name for name, col in spec.features if col.is_categorical][:MAX_CATEGORY_PLOTS]
    if not cats:
        return ""
    what = "rate" if lab.task == "binary" else "mean"
    n = len(cats)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(5 * cols, 3.4 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    tables = []
    for ax, c in zip(axes.flat, cats, strict=False):
        g = y.groupby(known[c].fillna("(missing)")).agg(["mean", "size"]).sort_values("mean")
        ax.barh(g.index.astype(str), g["mean"])
        ax.axvline(y.mean(), color="k", ls=":", lw=0.8)
        ax.set(title=c, xlabel=f"{lab.column} {what}")
        top, bottom = g.index[-1], g.index[0]
        tables.append(
            {
                "feature": c,
                "values": len(g),
                f"highest {what}": f"{top} ({g['mean'].iloc[-1]:.3f})",
                f"lowest {what}": f"{bottom} ({g['mean'].iloc[0]:.3f})",
            }
        )
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_dir / "by_category.png", dpi=80)
    return "\n".join(
        [
            "## Exploration\n",
            f"The {what} of `{lab.column}` by each categorical feature (rows with a final label; dotted: overall):\n",
            f"![by category]({out_dir.name}/by_category.png)\n",
            _md(pd.DataFrame(tables)),
            "",
        ]
    )


def _metric_table(m: dict[str, Any], task: str) -> pd.DataFrame:
    names = {
        "binary": ["roc_auc", "pr_auc", "log_loss", "brier", "precision", "recall", "f1"],
        "regression": ["rmse", "mae", "normalized_gini", "spearman", "decile_mape"],
        "multiclass": ["accuracy", "macro_f1", "weighted_f1", "log_loss"],
    }[task]
    base = "mean" if task == "regression" else "majority"
    rows = []
    for label, prefix in [
        ("CatBoost (this model)", ""),
        ("linear baseline", "baseline_"),
        ("rule baseline", "rule_"),
        (f"{base} baseline", f"{base}_"),
        ("oracle (true expectation)", "oracle_"),
    ]:
        if f"{prefix}{names[0]}" in m:
            rows.append({"": label, **{n: m.get(f"{prefix}{n}") for n in names}})
    return pd.DataFrame(rows)


def model_section(layout: Layout, m: dict[str, Any], out_dir: Path) -> str:
    from matplotlib.figure import (
        Figure,
    )  # no pyplot: no global backend or figure state (notebooks keep theirs)

    spec = layout.spec
    model, meta = load_bundle(layout.model_dir)
    imp = pd.DataFrame({"feature": meta.feature_names, "importance": model.get_feature_importance()})
    imp = imp.sort_values("importance", ascending=False).head(15)
    fig = Figure(figsize=(7, 0.32 * len(imp) + 1))
    ax = fig.subplots()
    ax.barh(imp["feature"][::-1], imp["importance"][::-1])
    ax.set(title="feature importance (CatBoost, prediction values change)", xlabel="importance")
    fig.tight_layout()
    fig.savefig(out_dir / "feature_importance.png", dpi=80)
    e = meta.extra
    lines = [
        "## Model\n",
        f"CatBoost ({meta.params.get('loss_function')}), {model.tree_count_} trees chosen by early stopping on "
        f"{spec.model.validation_fraction:.0%} of the train rows; parameters {json.dumps(spec.model.params)}"
        + (
            f", tuned by Optuna ({spec.model.tune.n_trials} trials): {json.dumps(e.get('tuned_params'))}"
            if e.get("tuned_params")
            else ""
        )
        + ".",
    ]
    mono = {n: c.monotone for n, c in spec.features if c.monotone}
    if mono:
        lines.append(f"Monotone in {mono} (+1: more never lowers the prediction).")
    if e.get("calibration"):
        lines.append("Probabilities are Platt-calibrated on the validation rows.")
    if "threshold" in e:
        lines.append(f"Operating threshold {e['threshold']:.3f} ({spec.model.threshold!s} on validation).")
    if e.get("segments"):
        lines.append("Segments: " + ", ".join(f"{s['name']} from {s['min']:g}" for s in e["segments"]) + ".")
    task = spec.label.task
    lead = {"binary": "roc_auc", "regression": "normalized_gini", "multiclass": "macro_f1"}[task]
    lines += [
        f"\n### Test metrics ({m['rows_test']:,} rows)\n",
        _md(_metric_table(m, task), ".4f"),
        "",
        f"Against the linear baseline (same rows, same features): {lead} {m[lead]:.4f} vs "
        f"{m['baseline_' + lead]:.4f}."
        + (
            f" The oracle (the true expectation, known only for generated data) reaches {m['oracle_' + lead]:.4f}: "
            f"the model is {m['oracle_' + lead] - m[lead]:.4f} below it."
            if f"oracle_{lead}" in m
            else ""
        ),
        "",
        f"![evaluation](../../plots/{spec.name}/{spec.name}_evaluation.png)\n",
        f"![feature importance]({out_dir.name}/feature_importance.png)\n",
    ]
    if task == "multiclass":
        per = pd.DataFrame(m["per_class"]).T.reset_index().rename(columns={"index": "class"})
        lines += ["Per class:\n", _md(per), ""]
    return "\n".join(lines)


def versions_section(layout: Layout, m: dict[str, Any]) -> str:
    """The previous version's feature set against this one's, on the same train and test rows
    (evaluate.version_comparison): what the features added in this version bought."""
    spec = layout.spec
    if spec.version < 2:
        return ""
    prev, cur = spec.version - 1, spec.version
    keys = [
        k.removesuffix(f"_v{cur}")
        for k in m
        if k.endswith(f"_v{cur}") and f"{k[: -len(str(cur))]}{prev}" in m
    ]
    keys = [k for k in keys if k != "model_version"]
    if not keys:
        return ""
    table = pd.DataFrame(
        {
            "metric": keys,
            f"v{prev}": [m[f"{k}_v{prev}"] for k in keys],
            f"v{cur}": [m[f"{k}_v{cur}"] for k in keys],
        }
    )
    table["change"] = table[f"v{cur}"] - table[f"v{prev}"]
    added = [n for n, c in spec.features if c.since == cur]
    return "\n".join(
        [
            f"## Version {prev} -> {cur}\n",
            f"Version {cur} adds {', '.join(f'`{a}`' for a in added) or 'no feature'} (declared with "
            f"`since: {cur}`; FeatureServices `{spec.name}_v{prev}` and `{spec.name}_v{cur}` both stay "
            f"registered). Both feature sets trained on the same train rows and scored on the same "
            f"{m['rows_test']:,} test rows, so only the features differ:\n",
            _md(table, ".4f"),
            "",
            "Which version is served is the registry's decision (`python -m pipelines.lifecycle status`; "
            "docs/lifecycle.md): the gate compares the challenger with the served champion on the same hold-out.\n",
        ]
    )


def outputs_section(layout: Layout) -> str:
    spec = layout.spec
    lines = ["## Outputs\n"]
    for what, path in [
        ("hold-out predictions, with the actual outcome", layout.holdout_path),
        ("scoring file: every row without a final label", layout.scoring_path),
    ]:
        if path.exists():
            t = pd.read_csv(path)
            seg = ""
            if "segment" in t:
                seg = (
                    " Segments: "
                    + ", ".join(f"{k} {v:,}" for k, v in t["segment"].value_counts().items())
                    + "."
                )
            lines.append(
                f"- `{_rel(path, layout.root)}`: {what}; {len(t):,} rows, columns {list(t.columns)}.{seg}"
            )
    key = spec.entity.join_key
    example: dict[str, Any] = {"entities": {key: ["<id>"]}}
    if spec.request_feature_names:
        example["features"] = {c: ["<value>"] for c in spec.request_feature_names}
    lines += [
        "",
        "## How web and mobile clients get the results\n",
        f"Real time: `POST /v1/models/{spec.name}/predict` with `{json.dumps(example)}` answers, per "
        f"{spec.entity.name}, the prediction"
        + (", its segment" if spec.model.segments else "")
        + (", the reasons in words" if any(c.reason for _, c in spec.features) else "")
        + ", the features used and their age, from the online store (`make materialize` refreshes it); "
        "every request is logged. The same model and features give the batch files above "
        "(core.predict is shared). `GET /v1/models` lists each model's metadata and feature service "
        f"(`{spec.feature_service}`).\n",
    ]
    return "\n".join(lines)


def build(layout: Layout, out: Path) -> str:
    spec = layout.spec
    out_dir = out.with_suffix("")
    out_dir.mkdir(parents=True, exist_ok=True)
    ingest = json.loads(layout.ingest_metrics.read_text())
    metrics = json.loads(layout.metrics.read_text())
    df = pd.read_parquet(layout.training_set)
    header = (
        f"# {spec.name}: {spec.description or 'a spec-declared model'}\n\n"
        f"Written by `make repro` (pipelines/tabular/report.py) from the stages' outputs; declared in "
        f"`specs/{spec.name}.yaml`. Entity `{spec.entity.name}` (`{spec.entity.join_key}`), "
        f"{len(spec.sources)} sources, {len(spec.features)} features (FeatureService `{spec.feature_service}`), "
        f"model version `{metrics['model_version']}`.\n"
    )
    parts = [
        header,
        quality_section(layout, ingest),
        label_section(layout, df),
        exploration_section(layout, df, out_dir),
        model_section(layout, metrics, out_dir),
        versions_section(layout, metrics),
        outputs_section(layout),
    ]
    text = "\n".join(p for p in parts if p)
    out.write_text(text)
    return text


def report_path(layout: Layout) -> Path:
    return layout.root / "docs" / "reports" / f"{layout.spec.name}.md"


def run(settings: Settings, layout: Layout) -> Path:
    out = report_path(layout)
    out.parent.mkdir(parents=True, exist_ok=True)
    build(layout, out)
    log.info("%s: report -> %s", layout.spec.name, out)
    return out
