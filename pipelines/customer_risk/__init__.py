"""Fintech customer risk (off-boarding): synthetic generator with an exact oracle, and ingestion."""
