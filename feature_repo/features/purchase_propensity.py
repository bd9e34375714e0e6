from datetime import timedelta

from data_sources import customer_purchases_source, session_activity_push
from entities import shopper
from feast import FeatureView

from domain.purchase_propensity import features as spec
from features import fields

# Nightly snapshots of the purchase history's aggregates (domain/purchase_propensity/features.py).
# A snapshot describes the history before its midnight; older than two days it is stale.
customer_purchases = FeatureView(
    name=spec.PURCHASE_VIEW,
    entities=[shopper],
    ttl=timedelta(days=2),
    schema=fields(spec.PURCHASE_FEATURES),
    source=customer_purchases_source,
    online=True,
    tags={"model": "purchase_propensity"},
)

# The current browsing session's state, pushed by the stream worker after each page view (a PushSource);
# its batch source is the same state after every recorded page view. A session idle for two hours is over.
session_activity = FeatureView(
    name=spec.SESSION_VIEW,
    entities=[shopper],
    ttl=timedelta(hours=2),
    schema=fields(spec.SESSION_FEATURES),
    source=session_activity_push,
    online=True,
    tags={"model": "purchase_propensity"},
)
