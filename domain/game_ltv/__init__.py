"""game_ltv's declarations (see domain/__init__.py)."""
