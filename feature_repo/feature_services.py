from feast import FeatureService
from features.api_anomaly import segment_baseline
from features.customer_risk import customer_profile, customer_transactions
from features.purchase_propensity import customer_purchases, session_activity

customer_risk_v1 = FeatureService(
    name="customer_risk_v1",
    features=[customer_profile, customer_transactions],
    description="Probability that a customer is off-boarded (SUSPENDED) for risk, with reasons",
    tags={"model": "customer_risk", "entity": "customer"},
)

api_anomaly_v1 = FeatureService(
    name="api_anomaly_v1",
    features=[segment_baseline],
    description="Expected band of a (country, os) traffic series for a day: is a count anomalous?",
    tags={"model": "api_anomaly", "entity": "traffic_segment"},
)

purchase_propensity_v1 = FeatureService(
    name="purchase_propensity_v1",
    features=[customer_purchases, session_activity],
    description="Probability that the customer's current browsing session ends in an order",
    tags={"model": "purchase_propensity", "entity": "shopper"},
)
