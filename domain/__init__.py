"""Each model's declarations, the leaf layer that pipelines, feature_repo and serving all import: its tables
and columns, features, and the logic batch and online share (purchase_propensity's session state). Nothing
here imports pipelines, serving or a generator; tests/unit/test_tabular_dvcgen.py holds the rule.
"""
