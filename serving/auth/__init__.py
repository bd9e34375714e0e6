"""API keys with scopes (keys.py: the table and its operations; guard.py: the per-request check)."""

from serving.auth.guard import AUTH_RESPONSES, Guard, any_key, require
from serving.auth.keys import ACTIONS, ApiKey, KeyProblem, KeyStore

__all__ = ["ACTIONS", "AUTH_RESPONSES", "ApiKey", "Guard", "KeyProblem", "KeyStore", "any_key", "require"]
