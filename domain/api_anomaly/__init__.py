"""api_anomaly's declarations (see domain/__init__.py)."""
