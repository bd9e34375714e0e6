"""Game LTV: revenue of a just-installed user in the first 7 days. All model specifics live here."""
