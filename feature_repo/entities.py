from feast import Entity, ValueType

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.INT64,
    description="A game user, from install on.",
)

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.INT64,
    description="A fintech customer (account holder), from signup on.",
)

traffic_segment = Entity(
    name="traffic_segment",
    join_keys=["segment"],
    value_type=ValueType.STRING,
    description="One daily API-traffic series: '<country>:<os>', e.g. 'US:android'.",
)
