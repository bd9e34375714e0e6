"""Generic stages for every spec'd model (core/spec.py): generate (demo data), ingest, training_set, train,
evaluate, score. Each reads only the model's spec and the files the previous stage wrote; none imports a
model's own package. `python -m pipelines.tabular <stage> <model>` runs one (what specs/dvc.yaml calls).
"""
