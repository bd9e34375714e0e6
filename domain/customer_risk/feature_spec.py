"""The customer_risk features: names, types, meaning, and the plain-language reason each one gives.

One place for these facts. `features.py` computes the columns, `feature_repo/features/customer_risk.py`
builds the Feast feature views from this list, and the train stage copies the reason phrases into the
model's metadata, so serving explains predictions without knowing this model.

A reason phrase is a `str.format` template with `{value}` (the customer's value) and is used when the
feature pushes this customer's risk up (a positive SHAP contribution).
"""

from __future__ import annotations

from dataclasses import replace

from core.feature_spec import Feature
from domain.customer_risk import schema as S

WINDOWS_DAYS = {"7d": 7, "30d": 30, "90d": 90}  # trailing windows, ending (exclusive) at the snapshot time
PASSTHROUGH_HOURS = 24  # an outgoing payment this soon after a similar inbound one passes money through
PASSTHROUGH_SIMILAR = (
    1.0,
    1.25,
)  # "similar": the inbound amount covers the outgoing one, with at most 25% kept
NIGHT_HOURS = 5  # 00:00-04:59 UTC
RECENT_DAYS = 21  # dormancy then burst: the recent part...
DORMANCY_LOOKBACK_DAYS = 120  # ...and how far back the longest silence before it is searched


_thr = f"{S.REPORTING_THRESHOLD_EUR:,.0f} EUR"

PROFILE_FEATURES = [
    Feature("country", "String", "country of residence (ISO alpha-2)", "resident in {value}"),
    Feature("age_band", "String", "age band at signup", "age band {value}"),
    Feature("kyc_level", "String", "KYC level (basic, standard, enhanced)", "only '{value}' KYC checks"),
    Feature("occupation", "String", "declared occupation", "declared occupation: {value}"),
    Feature("declared_income_band", "String", "declared yearly income band (EUR)", "declared income {value}"),
    Feature("account_type", "String", "personal, business or premium", "{value} account"),
]


def _windowed() -> list[Feature]:
    out: list[Feature] = []
    for w in WINDOWS_DAYS:
        d = WINDOWS_DAYS[w]
        out += [
            Feature(f"tx_count_{w}", "Int64", f"completed transactions in the last {d} days"),
            Feature(f"active_days_{w}", "Int64", f"days with a completed transaction in the last {d} days"),
            Feature(
                f"inflow_eur_{w}",
                "Float64",
                f"completed inbound EUR (transfers in, cash deposits, crypto sales), last {d} days",
                f"{{value:,.0f}} EUR received in the last {d} days",
            ),
            Feature(
                f"outflow_eur_{w}",
                "Float64",
                f"completed outbound EUR (card, transfers out, crypto buys, cash withdrawals), last {d} days",
                f"{{value:,.0f}} EUR sent or spent in the last {d} days",
            ),
            Feature(
                f"declined_count_{w}",
                "Int64",
                f"declined transactions in the last {d} days",
                f"{{value:.0f}} declined transactions in the last {d} days",
            ),
        ]
    return out


TRANSACTION_FEATURES = [
    *_windowed(),
    Feature(
        "decline_rate_30d",
        "Float64",
        "declined / attempted (any status), last 30 days (0 without attempts)",
        "{value:.0%} of attempted transactions declined in the last 30 days",
    ),
    Feature(
        "reversed_count_90d",
        "Int64",
        "reversed transactions in the last 90 days",
        "{value:.0f} reversed transactions in 90 days",
    ),
    Feature(
        "net_flow_ratio_30d",
        "Float64",
        "(inflow - outflow) / (inflow + outflow), last 30 days; near 0 = money in and straight out",
    ),
    Feature("max_tx_eur_90d", "Float64", "largest completed transaction in EUR, last 90 days"),
    Feature("mean_tx_eur_90d", "Float64", "mean completed transaction in EUR, last 90 days"),
    Feature(
        "near_threshold_count_30d",
        "Int64",
        f"completed cash deposits / transfers in just under the {_thr} reporting threshold, last 30 days",
        f"{{value:.0f}} deposits just under the {_thr} reporting threshold in the last 30 days",
    ),
    Feature(
        "near_threshold_count_90d",
        "Int64",
        f"completed cash deposits / transfers in of {S.STRUCTURING_FLOOR_EUR:,.0f} to {_thr}, last 90 days",
        f"{{value:.0f}} deposits just under the {_thr} reporting threshold in the last 90 days",
    ),
    Feature(
        "passthrough_share_90d",
        "Float64",
        f"share of completed transfer-out / crypto-buy volume sent within {PASSTHROUGH_HOURS} h of a "
        "similar inbound amount, last 90 days",
        f"{{value:.0%}} of outgoing transfers left within {PASSTHROUGH_HOURS} h of a similar incoming amount",
    ),
    Feature(
        "passthrough_eur_90d",
        "Float64",
        "EUR of that pass-through volume, last 90 days",
        "{value:,.0f} EUR passed straight through the account in 90 days",
    ),
    Feature(
        "high_risk_corridor_share_90d",
        "Float64",
        "share of completed transfer volume with high-risk counterparty countries, last 90 days",
        "{value:.0%} of transfer volume with high-risk countries in 90 days",
    ),
    Feature(
        "high_risk_corridor_count_90d",
        "Int64",
        "completed transfers with high-risk counterparty countries, last 90 days",
        "{value:.0f} transfers with high-risk countries in 90 days",
    ),
    Feature(
        "counterparty_countries_90d",
        "Int64",
        "distinct counterparty countries, last 90 days",
        "transfers with {value:.0f} different countries in 90 days",
    ),
    Feature(
        "crypto_share_90d",
        "Float64",
        "crypto share of completed volume, last 90 days",
        "{value:.0%} of volume in crypto in 90 days",
    ),
    Feature(
        "cash_share_90d",
        "Float64",
        "cash share of completed volume, last 90 days",
        "{value:.0%} of volume in cash in 90 days",
    ),
    Feature(
        "night_share_90d",
        "Float64",
        f"share of completed transactions between 00:00 and {NIGHT_HOURS:02d}:00 UTC, last 90 days",
        "{value:.0%} of transactions at night in 90 days",
    ),
    Feature(
        "inflow_to_income_90d",
        "Float64",
        "yearly rate of inbound EUR (90 days x 365/90) / midpoint of the declared income band",
        "money received at {value:.1f}x the declared income",
    ),
    Feature(
        "recent_tx_count",
        "Int64",
        f"completed transactions in the last {RECENT_DAYS} days",
        f"{{value:.0f}} transactions in the last {RECENT_DAYS} days",
    ),
    Feature(
        "dormant_days_before_recent",
        "Float64",
        f"longest stretch without a completed transaction in the {DORMANCY_LOOKBACK_DAYS} days before the "
        f"last {RECENT_DAYS} (days)",
        "{value:.0f} days dormant, then a burst of activity",
    ),
    Feature(
        "days_since_last_tx",
        "Float64",
        "days since the last completed transaction (account age when none)",
    ),
    Feature("account_age_days", "Float64", "days since signup", "account only {value:.0f} days old"),
]

# Domain knowledge the model must respect (CatBoost monotone constraints): more of these never lowers the
# risk, all else equal. It regularizes the model where data are thin and makes it defensible to a regulator.
RISK_INCREASING = {
    *(f"declined_count_{w}" for w in WINDOWS_DAYS),
    "decline_rate_30d",
    "near_threshold_count_30d",
    "near_threshold_count_90d",
    "passthrough_share_90d",
    "high_risk_corridor_share_90d",
    "high_risk_corridor_count_90d",
    "night_share_90d",
    "inflow_to_income_90d",
}
TRANSACTION_FEATURES = [
    replace(f, monotone=1) if f.name in RISK_INCREASING else f for f in TRANSACTION_FEATURES
]
ALL_FEATURES = [*PROFILE_FEATURES, *TRANSACTION_FEATURES]
BY_NAME = {f.name: f for f in ALL_FEATURES}

# Feature tables written by the features stage (relative to the features dir), read by feature_repo.
PROFILE_TABLE = "customer_profile"
TRANSACTIONS_TABLE = "customer_transactions"
LABELS_TABLE = "labels"  # labeled customers: event_timestamp = review time, label
SCORING_TABLE = "scoring_entities"  # unlabeled customers: event_timestamp = extraction time
EVENT_TIMESTAMP = "event_timestamp"
LABEL = "suspended"  # 1 = SUSPENDED
