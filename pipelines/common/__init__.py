"""Helpers shared by every model's stages."""
