"""Score the unlabeled customers: probability, segment, reasons; and the off-boarding list.

Outputs (``--out``): ``predictions.parquet`` (every unlabeled customer: probability, segment, reasons,
off-boarding decision and rule) and ``offboarding.csv`` (the customers to off-board, riskiest first, with
`reasons`: the rule that put them there and the strongest contributions, in words).

Off-boarding (params customer_risk.offboarding): a customer in the candidate segment (High) is off-boarded
when transaction evidence backs the model (any of the evidence rules), or on the model alone above
`always_above` and one rule holds. Other High customers go to enhanced review instead.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from catboost import Pool

from core.explain import reasons, segmenter, shap_values
from core.model_bundle import load_bundle
from core.predict import feature_frame, predict
from domain.customer_risk import feature_spec as F
from domain.customer_risk import schema as S
from pipelines.common.params import load_params
from pipelines.common.stage import stage, stage_parser
from pipelines.customer_risk.params import OffboardingParams

log = logging.getLogger(__name__)


def decide(frame: pd.DataFrame, p: OffboardingParams) -> tuple[pd.Series, pd.Series]:
    """(offboard, rule text) per row of `frame` (probability, segment and the evidence features).

    A customer of the candidate segment is off-boarded when at least `min_evidence` evidence rules hold,
    or one does and the probability reaches `always_above`: the model raises the question, independent
    transaction evidence answers it."""
    hits = np.column_stack([(frame[r.feature].fillna(0) >= r.at_least).to_numpy() for r in p.evidence])
    n = hits.sum(axis=1)
    candidate = (frame["segment"] == p.segment).to_numpy()
    sure = (frame["probability"] >= p.always_above).to_numpy()
    offboard = candidate & ((n >= p.min_evidence) | ((n >= 1) & sure))
    texts = [r.text for r in p.evidence]
    rule = [
        (
            f"{p.segment} risk (p={prob:.2f}) and {k} red flag{'s' if k > 1 else ''}: "
            + "; ".join(t for t, h in zip(texts, row, strict=True) if h)
        )
        if off
        else ""
        for off, k, prob, row in zip(offboard, n, frame["probability"], hits, strict=True)
    ]
    return pd.Series(offboard, index=frame.index), pd.Series(rule, index=frame.index, dtype=object)


def score(scoring_set: Path, model_dir: Path, p: OffboardingParams) -> pd.DataFrame:
    df = pd.read_parquet(scoring_set)
    model, meta = load_bundle(model_dir)
    prob = predict(model, meta, df)
    X = feature_frame(df, meta.features)
    shap = shap_values(model, Pool(X, cat_features=meta.categorical_features))
    values = X.astype(object).where(X.notna(), None).to_numpy()
    out = df[[S.ID, F.EVENT_TIMESTAMP]].rename(columns={F.EVENT_TIMESTAMP: "as_of"}).copy()
    out["probability"] = prob
    segment = segmenter(meta)
    assert segment is not None, f"model {meta.version} has no segments in its metadata"
    out["segment"] = [segment(v) for v in prob]
    why = [reasons(shap[i], list(values[i]), meta) for i in range(len(df))]
    out["top_reasons"] = [" | ".join(r["text"] for r in w) for w in why]
    out["reasons_json"] = [json.dumps(w, default=str) for w in why]
    for r in p.evidence:
        out[r.feature] = df[r.feature].to_numpy()
    out["offboard"], out["offboard_rule"] = decide(out, p)
    out["review"] = (out["segment"] == p.segment) & ~out["offboard"]
    out["model_version"] = meta.version
    return out.sort_values("probability", ascending=False, kind="stable").reset_index(drop=True)


def offboarding_list(pred: pd.DataFrame) -> pd.DataFrame:
    off = pred[pred["offboard"]].copy()
    off["reasons"] = off["offboard_rule"] + "; " + off["top_reasons"]
    return off[[S.ID, "probability", "segment", "offboard_rule", "reasons", "as_of", "model_version"]]


@stage
def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--scoring-set", type=Path, required=True)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    p = load_params(args.params).customer_risk.offboarding
    pred = score(args.scoring_set, args.model_dir, p)
    args.out.mkdir(parents=True, exist_ok=True)
    pred.to_parquet(args.out / "predictions.parquet", index=False)
    off = offboarding_list(pred)
    off.to_csv(args.out / "offboarding.csv", index=False)
    log.info(
        "scored %d customers: %s; off-boarding %d, enhanced review %d (capacity %d)",
        len(pred),
        pred["segment"].value_counts().to_dict(),
        len(off),
        int(pred["review"].sum()),
        p.review_capacity,
    )


if __name__ == "__main__":
    main()
