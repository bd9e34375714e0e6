"""customer_risk's declarations (see domain/__init__.py)."""
