"""Evaluate game_ltv on the held-out latest cohorts: model vs baselines vs the oracle.

Writes metrics/game_ltv.json (top-level model metrics, and the same with prefixes `oracle_`,
`baseline_mean_`, `baseline_linear_`), plot data for `dvc plots` (deciles, cumulative gain) and PNGs.
When install times were assumed (no install_time in the users file), the held-out users are a random
share instead of the latest cohorts, and the metrics say so (`timing`, `split`); a random split is
easier than a time split (no drift between train and test), so expect somewhat rosier numbers.
The oracle is the generator's exact expected revenue given what is known at prediction time; it is
computed when the raw data came from the generator (oracle.parquet present), else reported as null.
"""

from __future__ import annotations

import logging
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from core.model_bundle import load_bundle
from core.predict import feature_frame, predict
from domain.game_ltv import schema as S
from pipelines.common.ltv_metrics import cumulative_gain, deciles, ltv_metrics
from pipelines.common.params import load_params
from pipelines.common.stage import stage, stage_parser, write_metrics
from pipelines.game_ltv.params import EvaluateParams
from pipelines.game_ltv.train import BASELINES_FILE
from pipelines.game_ltv.training_set import SPLIT, split_info
from synthetic.game_ltv import oracle_expected_revenue

log = logging.getLogger(__name__)


def oracle_predictions(test: pd.DataFrame, oracle_path: Path, prediction_hours: int) -> np.ndarray | None:
    if not oracle_path.exists():
        return None
    prior = pd.read_parquet(oracle_path).set_index(S.ID).reindex(test[S.ID].to_numpy())
    if prior["engagement_rate"].isna().any():
        log.warning("oracle.parquet does not cover every test user; oracle metrics skipped")
        return None
    counts = test[S.EVENT_COUNTS].astype("Float64").fillna(0).to_numpy(dtype=float)
    return oracle_expected_revenue(prior.reset_index(), counts, np.full(len(test), prediction_hours))


def evaluate(
    training_set: Path,
    model_dir: Path,
    oracle_path: Path,
    p: EvaluateParams,
    prediction_hours: int,
    metrics_path: Path,
    plots_dir: Path,
) -> dict:
    df = pd.read_parquet(training_set)
    test = df[df[SPLIT] == "test"].reset_index(drop=True)
    y = test[S.LABEL].to_numpy(dtype=float)
    model, meta = load_bundle(model_dir)
    baselines = joblib.load(model_dir / BASELINES_FILE)
    x = feature_frame(test, meta.features)
    preds = {
        "model": predict(model, meta, test),
        "baseline_mean": baselines["mean"].predict(x),
        "baseline_linear": np.clip(baselines["linear"].predict(x), 0, None),
    }
    oracle = oracle_predictions(test, oracle_path, prediction_hours)
    if oracle is not None:
        preds["oracle"] = oracle
    metrics: dict = {}
    for who, pred in preds.items():
        prefix = "" if who == "model" else f"{who}_"
        metrics.update({prefix + k: v for k, v in ltv_metrics(y, pred, p.n_bins).items()})
    metrics["test_rows"] = len(test)
    metrics["test_payer_share"] = round(float((y > 0).mean()), 6)
    metrics["model_version"] = meta.version
    info = split_info(df)
    if info["timing"] != S.TIMING_INSTALL_TIME:  # real install times: the file stays as it always was
        metrics.update(info)
    if oracle is not None:
        ratio = metrics["normalized_gini"] / metrics["oracle_normalized_gini"]
        metrics["gini_ratio_vs_oracle"] = round(ratio, 4)
        metrics["meets_gini_target"] = bool(ratio >= p.gini_target_vs_oracle)
    else:
        metrics["oracle_normalized_gini"] = None
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    write_metrics(metrics_path, metrics)
    write_plots(y, preds, p.n_bins, plots_dir)
    log.info("gini %.4f (oracle %s)", metrics["normalized_gini"], metrics.get("oracle_normalized_gini"))
    return metrics


def write_plots(y: np.ndarray, preds: dict[str, np.ndarray], n_bins: int, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    d = deciles(y, preds["model"], n_bins).rename(columns={"label": "actual", "prediction": "predicted"})
    d["bin"] = d["bin"] + 1
    d.to_csv(out / "deciles.csv", index=False)
    share = np.linspace(0, 1, 101)
    gain = pd.DataFrame({"share_of_users": share})
    n = len(y)
    for who, pred in {"perfect": y, **preds}.items():
        g = np.concatenate([[0.0], cumulative_gain(y, pred)])
        gain[who] = g[np.round(share * n).astype(int)]
    gain.round(5).to_csv(out / "gain.csv", index=False)

    fig = Figure(figsize=(11, 4.2))  # no pyplot: no global backend switch at import
    axes = fig.subplots(1, 2)
    ax = axes[0]
    w = 0.4
    ax.bar(d["bin"] - w / 2, d["actual"], w, label="actual mean")
    ax.bar(d["bin"] + w / 2, d["predicted"], w, label="predicted mean")
    ax.set_yscale("symlog", linthresh=0.05)
    ax.set(
        xlabel="decile of predicted 7-day revenue",
        ylabel="revenue per user",
        title="Decile chart (test cohort)",
    )
    ax.legend()
    ax = axes[1]
    for who in gain.columns[1:]:
        ax.plot(gain["share_of_users"], gain[who], label=who, lw=1.5 if who in ("model", "oracle") else 1)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="share of users (ranked by prediction)", ylabel="share of revenue", title="Cumulative gain")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "game_ltv_evaluation.png", dpi=110)


@stage
def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--training-set", type=Path, required=True)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--oracle", type=Path, required=True, help="oracle.parquet (absent for real data)")
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--plots", type=Path, required=True)
    args = ap.parse_args()
    params = load_params(args.params).game_ltv
    evaluate(
        args.training_set,
        args.model_dir,
        args.oracle,
        params.evaluate,
        params.training_set.prediction_hours,
        args.metrics,
        args.plots,
    )


if __name__ == "__main__":
    main()
