"""A model's life after training: registration in MLflow, the promotion gate, the monitor, the scheduled
jobs (docs/lifecycle.md). `python -m pipelines.lifecycle --help` lists the commands."""
