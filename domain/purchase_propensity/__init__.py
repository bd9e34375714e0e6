"""purchase_propensity's declarations (see domain/__init__.py)."""
