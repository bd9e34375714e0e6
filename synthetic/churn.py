"""The worked example of README's "Your own model in one file": a telecom's subscribers, written once as the
plain CSV files a user would bring (``examples/churn/``), with ``specs/churn.yaml`` declaring them.

* ``subscribers.csv``: one row per subscriber as of the export's start (plan, contract, age, region);
* ``usage.csv``: weekly snapshots (minutes, data, support calls, late payments, dropped calls);
* ``labels.csv``: one row per subscriber and week: did the subscriber leave within the next 28 days?
  (empty for the last weeks: not known yet).

Three defects are planted for the walkthrough to find: a negative minute count, an unknown plan, a
duplicated usage row.

P(churn) is a fixed logistic function of the latest weekly snapshot before the prediction and the
plan, so a model can learn it. Small on purpose (seconds to build).

    python -m synthetic.churn --out examples/churn
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

START = pd.Timestamp("2026-06-01T00:00:00Z")
PLANS = ["prepaid", "basic", "unlimited", "family"]
REGIONS = ["north", "south", "east", "west"]


def generate(out: Path, n: int = 1000, weeks: int = 8, horizon_weeks: int = 4, seed: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ids = np.arange(1, n + 1) + 3_000_000
    plan = rng.choice(PLANS, n, p=[0.3, 0.3, 0.25, 0.15])
    contract = np.where(plan == "prepaid", "none", rng.choice(["monthly", "annual"], n, p=[0.6, 0.4]))
    age = rng.integers(18, 85, n)
    pd.DataFrame(
        {
            "subscriber_id": ids,
            "plan": plan,
            "contract": contract,
            "age": age,
            "region": rng.choice(REGIONS, n),
        }
    ).to_csv(out / "subscribers.csv", index=False)
    heavy = rng.gamma(2.0, 1.0, n)
    usage, labels = [], []
    for w in range(weeks):
        t = START + pd.Timedelta(days=7 * w)
        minutes = rng.poisson(60 * heavy)
        data_gb = rng.gamma(1.5, 1.2 * heavy).round(2)
        support = rng.poisson(0.2 + 0.3 * (plan == "prepaid"), n)
        late = rng.binomial(1, 0.05 + 0.1 * (contract == "none"), n)
        dropped = rng.poisson(1.0, n)
        usage.append(
            pd.DataFrame(
                {
                    "subscriber_id": ids,
                    "week_end": t.strftime("%Y-%m-%d"),
                    "minutes": minutes,
                    "data_gb": data_gb,
                    "support_calls": support,
                    "late_payments": late,
                    "dropped_calls": dropped,
                }
            )
        )
        logit = (
            -2.6
            + 0.7 * support
            + 1.1 * late
            + 0.25 * dropped
            - 0.004 * minutes
            + 0.9 * (contract == "none")
            - 0.8 * (contract == "annual")
            - 0.01 * (age - 45)
        )
        churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int).astype(str)
        if w >= weeks - horizon_weeks:  # the next 28 days have not passed yet
            churned = np.full(n, "", dtype=object)
        labels.append(
            pd.DataFrame(
                {
                    "subscriber_id": ids,
                    "as_of": (t + pd.Timedelta(days=1)).strftime("%Y-%m-%d"),
                    "churned": churned,
                }
            )
        )
    u, lab = pd.concat(usage, ignore_index=True), pd.concat(labels)
    # three defects a real export has, for the walkthrough's quarantine
    u.loc[5, "minutes"] = -40
    u = pd.concat([u, u.iloc[[7]]])
    subs = pd.read_csv(out / "subscribers.csv")
    subs.loc[3, "plan"] = "gold"
    subs.to_csv(out / "subscribers.csv", index=False)
    u.to_csv(out / "usage.csv", index=False)
    lab.to_csv(out / "labels.csv", index=False)
    return {
        "subscribers": n,
        "usage": len(u),
        "labels": len(lab),
        "churn_rate": float((lab["churned"] == "1").sum() / (lab["churned"] != "").sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    print(generate(ap.parse_args().out))


if __name__ == "__main__":
    main()
