"""Seeded synthetic data for demos and tests; never imported by serving."""
