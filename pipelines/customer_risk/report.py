"""Write docs/reports/customer_risk.md (and its plots) from the stages' outputs, for a risk officer.

Sections: the data and its quality, exploration, model choice and tuning, cross-validation and test
results against the baseline and the oracle, feature importance, segments and their reasoning, segment
profiles, the off-boarding list, assumptions and limitations. Every figure is read from a stage output.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from core.model_bundle import load_metadata
from domain.customer_risk import feature_spec as F
from domain.customer_risk import schema as S
from pipelines.common.params import load_params
from pipelines.common.stage import stage, stage_parser
from pipelines.customer_risk.params import CustomerRiskParams

log = logging.getLogger(__name__)

PROFILE_COLUMNS = [
    "tx_count_90d",
    "inflow_eur_90d",
    "inflow_to_income_90d",
    "decline_rate_30d",
    "near_threshold_count_90d",
    "passthrough_share_90d",
    "high_risk_corridor_share_90d",
    "night_share_90d",
    "dormant_days_before_recent",
    "account_age_days",
]


def _table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    return df.to_markdown(index=False, floatfmt=floatfmt)


def _fmt(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def quality_section(ingest: dict, quarantine_dir: Path) -> str:
    rows = []
    for name, rep in ingest.items():
        if not isinstance(rep, dict) or "rows_in" not in rep:
            continue
        rows.append(
            {
                "file": name,
                "rows in": rep["rows_in"],
                "kept": rep["rows_ok"],
                "quarantined": rep["quarantined"],
            }
        )
    examples = []
    for f in sorted(quarantine_dir.glob("*.csv")):
        q = pd.read_csv(f, dtype=str, keep_default_na=False)
        if q.empty:
            continue
        for code, g in q.groupby("reason_code"):
            examples.append(
                {"file": f.stem, "reason": code, "rows": len(g), "example": g["reason"].iloc[0][:110]}
            )
    repairs = []
    for name, rep in ingest.items():
        for code, n in (rep.get("repaired", {}) if isinstance(rep, dict) else {}).items():
            if n:
                repairs.append({"file": name, "repair": code, "rows": n})
    ex = pd.DataFrame(examples).sort_values(["file", "rows"], ascending=[True, False]) if examples else None
    return "\n".join(
        [
            "## 1. Data and its quality",
            "",
            f"The export was taken at **{ingest.get('extracted_at')}**. Every row was validated; rows that could "
            "not be trusted went to `data/quarantine/customer_risk/` with a reason code and a sentence, nothing "
            "was dropped silently. Formatting noise (case, spaces, spelling of categories) was repaired and "
            "counted.",
            "",
            _table(pd.DataFrame(rows)),
            "",
            "**Quarantined, by reason** (one example each). Transactions of a quarantined customer are kept aside "
            "too (`customer_quarantined`): they cannot be attributed safely.",
            "",
            _table(ex) if ex is not None else "_nothing quarantined_",
            "",
            "**Repaired**: "
            + (", ".join(f"{r['repair']} ({r['file']}: {r['rows']})" for r in repairs) or "none"),
            "",
        ]
    )


def exploration_section(clean_dir: Path, training: pd.DataFrame, out: Path) -> str:
    customers = pd.read_parquet(clean_dir / S.CLEAN_CUSTOMERS)
    tx = pd.read_parquet(clean_dir / S.CLEAN_TRANSACTIONS, columns=[S.ID, S.AMOUNT_EUR, "type", "status"])
    per_customer = tx.groupby(S.ID).size()
    q = per_customer.quantile([0.1, 0.5, 0.9, 0.99]).round(0)
    amounts = tx.loc[tx["status"] == S.COMPLETED, S.AMOUNT_EUR]
    aq = amounts.quantile([0.5, 0.9, 0.99, 0.999]).round(0)
    lab = training
    rate_by_kyc = lab.groupby("kyc_level")[F.LABEL].agg(["mean", "size"]).reset_index()
    rate_by_kyc.columns = ["kyc_level", "SUSPENDED rate", "customers"]
    missing = (
        lab[[f.name for f in F.ALL_FEATURES]]
        .isna()
        .mean()
        .loc[lambda s: s > 0]
        .round(4)
        .rename("share missing")
    )

    fig, ax = plt.subplots(1, 3, figsize=(17, 4.6))
    ax[0].hist(np.log10(per_customer.clip(lower=1)), bins=50)
    ax[0].set(xlabel="log10(transactions per customer)", ylabel="customers", title="Activity is heavy-tailed")
    ax[1].hist(np.log10(amounts.clip(lower=0.01)), bins=80)
    ax[1].axvline(np.log10(S.REPORTING_THRESHOLD_EUR), color="red", ls=":", label="10,000 EUR threshold")
    ax[1].set(xlabel="log10(amount EUR)", title="Completed amounts", ylabel="transactions")
    ax[1].legend()
    for label, g in lab.groupby(F.LABEL):
        ax[2].hist(
            g["decline_rate_30d"], bins=30, alpha=0.6, density=True, label="SUSPENDED" if label else "ACTIVE"
        )
    ax[2].set(xlabel="decline rate, 30 days", title="Declines by final state", ylabel="density")
    ax[2].legend()
    fig.tight_layout()
    fig.savefig(out / "exploration.png", dpi=100)
    plt.close(fig)
    return "\n".join(
        [
            "## 2. Exploration",
            "",
            f"{len(customers):,} customers ({(customers[S.COHORT] == S.LABELED).sum():,} labeled, "
            f"{(customers[S.COHORT] == S.UNLABELED).sum():,} to score) and {len(tx):,} clean transactions. "
            f"Transactions per customer: median {q[0.5]:.0f}, 10th percentile {q[0.1]:.0f}, 90th {q[0.9]:.0f}, "
            f"99th {q[0.99]:.0f}. Completed amounts: median {aq[0.5]:,.0f} EUR, 99th percentile {aq[0.99]:,.0f}, "
            f"99.9th {aq[0.999]:,.0f}: heavy tails, so the features use counts, shares and ratios rather than "
            "raw sums alone, and the baseline sees log-scaled numbers. Declined and reversed transactions are "
            "not errors but evidence: they are kept and counted.",
            "",
            f"Labeled customers: {lab[F.LABEL].mean():.1%} SUSPENDED. By KYC level:",
            "",
            _table(rate_by_kyc),
            "",
            "Missing values in the model's features (CatBoost treats them natively; the baseline imputes the "
            "median): " + (", ".join(f"{k} {v:.1%}" for k, v in missing.items()) or "none") + ".",
            "",
            "![exploration](customer_risk/exploration.png)",
            "",
        ]
    )


def model_section(metrics: dict, trials: list[dict], p: CustomerRiskParams, out: Path) -> str:
    t = pd.DataFrame(trials)
    done = t[t["state"] == "COMPLETE"].sort_values("value", ascending=False)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(t["number"], t["value"], "o", label="trial")
    ax.plot(t["number"], t["value"].cummax(), "-", label="best so far")
    ax.set(xlabel="trial", ylabel="mean PR-AUC (CV)", title="Optuna search")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "tuning.png", dpi=100)
    plt.close(fig)
    cv = metrics["cv"]
    rows = []
    for who, label in (
        ("model", "CatBoost (calibrated)"),
        ("baseline", "logistic regression"),
        ("oracle", "oracle"),
    ):
        if f"{who}_roc_auc_mean" not in cv:
            continue
        rows.append(
            {"": label}
            | {
                k: f"{cv[f'{who}_{k}_mean']:.3f} ± {cv[f'{who}_{k}_std']:.3f}"
                for k in ("roc_auc", "pr_auc", "brier", "precision", "recall", "f1")
            }
        )
    test_rows = []
    for who, label in (
        ("", "CatBoost (calibrated)"),
        ("baseline_", "logistic regression"),
        ("oracle_", "oracle"),
    ):
        if f"{who}roc_auc" not in metrics:
            continue
        test_rows.append(
            {"": label}
            | {
                k: metrics[f"{who}{k}"]
                for k in ("roc_auc", "pr_auc", "brier", "log_loss", "precision", "recall", "f1")
            }
        )
    tp = metrics["tuned_params"]
    return "\n".join(
        [
            "## 3. Model choice and tuning",
            "",
            "**Features** (Feast FeatureService `customer_risk_v1`): the profile declared at signup, and as-of "
            "snapshots of transaction aggregates over 7, 30 and 90 days (counts, in/out volumes, declines, "
            "deposits just under the reporting threshold, money passed straight through, high-risk corridors, "
            "crypto and cash shares, night activity, inflow against declared income, dormancy before a burst, "
            "recency, account age). A labeled customer is described as of its review time, from transactions "
            "strictly before it: an off-boarded account has no activity afterwards, so anything later would "
            "leak the label (a test proves it cannot).",
            "",
            "**Why CatBoost**: categorical profile fields natively (no one-hot explosion of 190 countries), "
            "missing values handled, threshold-like risk patterns learnt by trees, exact SHAP values for "
            "per-customer reasons, and **monotone constraints**: declines, near-threshold deposits, pass-through "
            "and high-risk-corridor shares, night share and inflow against income may only raise the risk, all "
            "else equal. That is what a regulator expects, and it regularizes where positives are few.",
            "",
            f"**Class imbalance** ({metrics['test_suspended'] / metrics['test_customers']:.1%} positives): the "
            "search chooses among no weights, square-root-balanced and balanced class weights; whatever it "
            "picks, a Platt calibration fitted on out-of-fold scores maps the scores back to probabilities, so "
            "segment thresholds mean what they say.",
            "",
            f"**Tuning**: Optuna (TPE sampler, seeded; median pruner) over depth, learning rate, L2, random "
            f"strength, bagging temperature and class weights, {p.train.n_trials} trials, each scored by mean "
            f"PR-AUC over {p.train.tune_folds} stratified folds of the training split with early stopping. The "
            f"test split (20%, stratified) is never used for tuning, calibration or thresholds. Chosen: "
            + ", ".join(f"{k} = {_fmt(v)}" for k, v in tp.items())
            + ".",
            "",
            _table(done.head(5).drop(columns=["state"]).rename(columns={"value": "PR-AUC (CV)"}), ".4f"),
            "",
            "![tuning](customer_risk/tuning.png)",
            "",
            f"## 4. Results\n\n**Cross-validation** ({p.train.cv_folds} stratified folds of the training split, "
            "mean ± standard deviation; the model's probabilities calibrated cross-fitted; decisions at the High "
            f"threshold {p.segments.high}):",
            "",
            _table(pd.DataFrame(rows)),
            "",
            f"**Test split** ({metrics['test_customers']:,} customers, {metrics['test_suspended']} SUSPENDED):",
            "",
            _table(pd.DataFrame(test_rows)),
            "",
            "The oracle is each customer's true probability of being off-boarded given its data, known by "
            "construction of the synthetic data: no model can rank better on average. The gap to it is what "
            "is left to learn; the gap to the baseline is what the trees and the constraints buy.",
            "",
            "![evaluation](../../plots/customer_risk/customer_risk_evaluation.png)",
            "",
        ]
    )


def importance_section(importance: pd.DataFrame) -> str:
    top = importance.head(12).copy()
    top["what it measures"] = top["feature"].map(lambda f: F.BY_NAME[f].description)
    return "\n".join(
        [
            "## 5. Feature importance",
            "",
            "Mean absolute SHAP value on the test split (log-odds): how much each feature moves a typical "
            "customer's risk. Per customer, the same SHAP values give the reasons in the outputs and the API.",
            "",
            _table(top.rename(columns={"mean_abs_shap": "mean abs SHAP"}), ".3f"),
            "",
        ]
    )


def segments_section(
    pred: pd.DataFrame,
    training: pd.DataFrame,
    unlabeled: pd.DataFrame,
    oof: pd.DataFrame,
    p: CustomerRiskParams,
) -> str:
    o = p.offboarding
    seg = p.segments
    breakeven = o.review_cost_eur / o.loss_if_missed_eur
    thresholds = sorted({0.02, 0.05, seg.medium, 0.15, 0.25, seg.high, 0.5, o.always_above})
    y, prob = oof["suspended"].to_numpy(), oof["oof_model"].to_numpy()
    rows = []
    for t in thresholds:
        above = pred["probability"] >= t
        flagged = prob >= t
        net = float((pred.loc[above, "probability"] * o.loss_if_missed_eur - o.review_cost_eur).sum())
        rows.append(
            {
                "threshold": f"{t:g}",
                "customers above (to score)": f"{int(above.sum()):,}",
                "expected risky among them": f"{pred.loc[above, 'probability'].sum():,.0f}",
                "expected loss avoided minus review cost (EUR)": f"{net:,.0f}",
                "precision (CV)": f"{y[flagged].mean():.2f}" if flagged.any() else "-",
                "recall (CV)": f"{y[flagged].sum() / max(y.sum(), 1):.2f}",
            }
        )
    prof = pred.copy()
    profile = prof.groupby("segment").agg(customers=(S.ID, "size"), mean_probability=("probability", "mean"))
    merged = prof[[S.ID, "segment"]].merge(
        unlabeled[[S.ID, *PROFILE_COLUMNS, "kyc_level"]], on=S.ID, how="left"
    )
    med = merged.groupby("segment")[PROFILE_COLUMNS].median()
    basic = (
        merged.assign(basic=merged["kyc_level"] == "basic")
        .groupby("segment")["basic"]
        .mean()
        .rename("share basic KYC")
    )
    table = profile.join(med).join(basic).reindex(["Low", "Medium", "High"]).reset_index()
    return "\n".join(
        [
            "## 6. Risk segments",
            "",
            f"Segments are cut on the calibrated probability (thresholds in `params.yaml`, "
            f"`customer_risk.segments`): **Low** < {seg.medium}, **Medium** {seg.medium} to {seg.high}, "
            f"**High** ≥ {seg.high}.",
            "",
            f"- Economics: keeping a risky customer is assumed to cost {o.loss_if_missed_eur:,.0f} EUR, an enhanced "
            f"review {o.review_cost_eur:,.0f} EUR, so a review pays for itself from a probability of "
            f"{breakeven:.1%}. The binding limit is not money but the team: {o.review_capacity} enhanced reviews "
            "per cycle.",
            f"- **High** ({seg.high}) is sized to that capacity with high precision: the customers the team "
            "reviews (or off-boards, with evidence) are mostly true cases.",
            f"- **Medium** ({seg.medium}, above the {training[F.LABEL].mean():.1%} base rate) gets enhanced "
            "monitoring: tighter transaction rules and a re-score at every snapshot, no analyst time.",
            "",
            "What each threshold would mean on the customers to score (expected counts from the calibrated "
            "probabilities) and on the labeled ones (cross-validated precision and recall):",
            "",
            _table(pd.DataFrame(rows)),
            "",
            "**Segment profiles** (customers to score; medians):",
            "",
            _table(table, ".2f"),
            "",
        ]
    )


def offboarding_section(pred: pd.DataFrame, off: pd.DataFrame, p: CustomerRiskParams) -> str:
    o = p.offboarding
    rules = "\n".join(f"- `{r.feature}` ≥ {r.at_least:g}: {r.text}" for r in o.evidence)
    examples = off.head(6)[[S.ID, "probability", "reasons"]]
    flag_counts = {
        r.text: int((pred.loc[pred["offboard"], r.feature].fillna(0) >= r.at_least).sum()) for r in o.evidence
    }
    reviewed = int(pred["review"].sum())
    return "\n".join(
        [
            "## 7. Off-boarding",
            "",
            f"A customer is off-boarded when it is in the **{o.segment}** segment and independent transaction "
            f"evidence backs the model: at least {o.min_evidence} of these red flags, or one when the probability "
            f"is {o.always_above:g} or more:\n\n{rules}\n\nOther {o.segment} customers go to enhanced review: "
            "the model raises the question, the evidence answers it. Off-boarding is the decision to propose; "
            "each case still gets a compliance sign-off.",
            "",
            f"**{len(off)} customers to off-board** and {reviewed} to review ({o.segment} without enough evidence), "
            f"out of {len(pred):,} scored; review capacity is {o.review_capacity} per cycle. Mean probability on "
            f"the list: {off['probability'].mean():.2f}. Red flags on the list: "
            + ", ".join(f"{t} ({n})" for t, n in flag_counts.items())
            + ". The full list with reasons is `data/outputs/customer_risk/offboarding.csv`; every customer's "
            "probability, segment and reasons are in `predictions.parquet`. Examples:",
            "",
            _table(examples, ".3f"),
            "",
        ]
    )


LIMITATIONS = """## 8. Assumptions and limitations

- The data are synthetic (seeded generator, `synthetic/customer_risk.py`): the risk patterns, their
  strengths and the label noise are assumptions. On real data the same pipeline runs unchanged (your own
  `labeled/` and `unlabeled/` folders), but the oracle rows disappear and the thresholds must be revisited.
- Labels record past decisions of a compliance team, not ground truth: the model learns their policy,
  including its blind spots. Customers never reviewed are not in the labeled set.
- Each labeled customer is described as of its review time; the unlabeled ones as of the extraction time.
  Customers with very short histories have little evidence: their scores lean on the profile.
- Economics (loss if missed, review cost) are placeholders for the business to set; the segment thresholds
  follow from them and from review capacity.
- Reasons are the strongest positive SHAP contributions in log-odds; they explain the model, not the customer's
  intent. CatBoost's SHAP values for a row move slightly with the batch they are computed in (a few thousandths),
  so two near-tied reasons can swap order between the API and the batch output.
"""


def build_report(
    metrics_path: Path,
    ingest_path: Path,
    clean_dir: Path,
    quarantine_dir: Path,
    training_set: Path,
    scoring_set: Path,
    model_dir: Path,
    outputs: Path,
    plots: Path,
    p: CustomerRiskParams,
    out_md: Path,
) -> None:
    img = out_md.parent / out_md.stem
    img.mkdir(parents=True, exist_ok=True)
    metrics = json.loads(metrics_path.read_text())
    ingest = json.loads(ingest_path.read_text())
    training = pd.read_parquet(training_set)
    pred = pd.read_parquet(outputs / "predictions.parquet")
    off = pd.read_csv(outputs / "offboarding.csv")
    meta = load_metadata(model_dir)
    trials = json.loads((model_dir / "tuning_trials.json").read_text())
    oof = pd.read_parquet(model_dir / "oof.parquet")
    importance = pd.read_csv(plots / "feature_importance.csv")
    head = (
        f"# Customer risk: segmentation and off-boarding\n\n_Generated by `dvc repro customer_risk_report` "
        f"from model `{meta.version}`; do not edit by hand._\n\n"
        f"**Summary.** On the held-out test split the model ranks SUSPENDED customers with ROC-AUC "
        f"**{metrics['roc_auc']:.3f}** (oracle {metrics.get('oracle_roc_auc', float('nan')):.3f}, "
        f"logistic baseline {metrics['baseline_roc_auc']:.3f}) and PR-AUC **{metrics['pr_auc']:.3f}** "
        f"(baseline {metrics['baseline_pr_auc']:.3f}). Of {len(pred):,} customers scored, "
        + ", ".join(
            f"{n} are {s}"
            for s, n in pred["segment"].value_counts().reindex(["Low", "Medium", "High"]).items()
        )
        + f"; **{len(off)}** are on the off-boarding list, each with its reasons.\n"
    )
    parts = [
        head,
        quality_section(ingest, quarantine_dir),
        exploration_section(clean_dir, training, img),
        model_section(metrics, trials, p, img),
        importance_section(importance),
        segments_section(pred, training, pd.read_parquet(scoring_set), oof, p),
        offboarding_section(pred, off, p),
        LIMITATIONS,
    ]
    out_md.write_text("\n".join(parts))
    log.info("wrote %s", out_md)


@stage
def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--metrics", type=Path, default=Path("metrics/customer_risk.json"))
    ap.add_argument("--ingest-metrics", type=Path, default=Path("metrics/customer_risk_ingest.json"))
    ap.add_argument("--clean", type=Path, default=Path("data/clean/customer_risk"))
    ap.add_argument("--quarantine", type=Path, default=Path("data/quarantine/customer_risk"))
    ap.add_argument("--training-set", type=Path, default=Path("data/training/customer_risk.parquet"))
    ap.add_argument("--scoring-set", type=Path, default=Path("data/training/customer_risk_unlabeled.parquet"))
    ap.add_argument("--model-dir", type=Path, default=Path("models/customer_risk"))
    ap.add_argument("--outputs", type=Path, default=Path("data/outputs/customer_risk"))
    ap.add_argument("--plots", type=Path, default=Path("plots/customer_risk"))
    ap.add_argument("--out", type=Path, default=Path("docs/reports/customer_risk.md"))
    args = ap.parse_args()
    build_report(
        args.metrics,
        args.ingest_metrics,
        args.clean,
        args.quarantine,
        args.training_set,
        args.scoring_set,
        args.model_dir,
        args.outputs,
        args.plots,
        load_params(args.params).customer_risk,
        args.out,
    )


if __name__ == "__main__":
    main()
