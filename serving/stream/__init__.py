"""The streaming path of purchase_propensity: RabbitMQ page views -> Feast push -> CatBoost -> predictions.

`python -m serving.stream` runs the worker (serving/stream/worker.py); `python -m serving.stream.producer`
replays recorded page views to the broker at a chosen rate. docs/streaming.md has the design.
"""
