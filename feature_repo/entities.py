from feast import Entity, ValueType

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.INT64,
    description="A fintech's account holder (customer_risk, ids from 50,000,001).",
)

# Another business's customers, another entity (its ids happen to share the column name customer_id).
shopper = Entity(
    name="shopper",
    join_keys=["customer_id"],
    value_type=ValueType.INT64,
    description="An e-commerce shop's customer (purchase_propensity, ids from 90,000,001).",
)

traffic_segment = Entity(
    name="traffic_segment",
    join_keys=["segment"],
    value_type=ValueType.STRING,
    description="One daily API-traffic series: '<country>:<os>', e.g. 'US:android'.",
)
