from datetime import timedelta

from data_sources import customer_profile_source, customer_transactions_source
from entities import customer
from feast import FeatureView

from domain.customer_risk import feature_spec as spec
from features import fields

# Attributes declared at signup. ttl=0: they never expire.
customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=timedelta(0),
    schema=fields(spec.PROFILE_FEATURES),
    source=customer_profile_source,
    online=True,
    tags={"model": "customer_risk"},
)

# As-of snapshots of trailing-window transaction aggregates (pipelines/customer_risk/features.py). A
# snapshot describes the windows ending at its own time, so it goes stale: Feast serves nothing older
# than the ttl (the features stage writes one every week, and one at each extraction).
customer_transactions = FeatureView(
    name="customer_transactions",
    entities=[customer],
    ttl=timedelta(days=14),
    schema=fields(spec.TRANSACTION_FEATURES),
    source=customer_transactions_source,
    online=True,
    tags={"model": "customer_risk"},
)
